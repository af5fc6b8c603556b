"""FrameBuffer: bounds by count and bytes, lookup by index and time, stable snapshots."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pixelis_ros.frames import Frame, FrameBuffer, FrameLookupError, Frames


def img(value: int = 0, size=(32, 24)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


def test_bounded_by_count_and_bytes():
    buf = FrameBuffer(max_frames=5, max_bytes=10 * img().nbytes)
    for i in range(8):
        buf.add(img(i), i * 0.1)
    assert len(buf) == 5 and buf.evicted == 3 and buf.snapshot()[0].stamp == pytest.approx(0.3)
    small = FrameBuffer(max_frames=100, max_bytes=3 * img().nbytes)
    for i in range(6):
        small.add(img(i), i)
    assert len(small) == 3 and small.nbytes == 3 * img().nbytes


def test_refuses_what_can_never_fit_and_out_of_order_frames():
    buf = FrameBuffer(max_frames=3, max_bytes=img().nbytes)
    with pytest.raises(ValueError, match="exceeds the buffer's max_bytes"):
        buf.add(img(size=(64, 64)), 0.0)
    buf.add(img(), 1.0)
    with pytest.raises(ValueError, match="older than the newest buffered"):
        buf.add(img(), 0.5)
    assert len(buf) == 1 and buf.dropped == 2


def test_lookup_by_index_and_time():
    frames = Frames([Frame(img(i), 10.0 + i * 0.1) for i in range(10)])
    assert frames.index_of(-1) == 9 and frames.index_of(0) == 0
    assert frames.index_at(10.0) == 0 and frames.index_at(10.25) == 2 and frames.index_at(10.95) == 9
    assert frames.end_of(3) == pytest.approx(10.4) and frames.span == pytest.approx((10.0, 11.0))
    with pytest.raises(FrameLookupError, match="frame index 10 is outside the buffer"):
        frames.index_of(10)
    with pytest.raises(FrameLookupError, match="time 9.5 s is outside the buffer, which covers 10..11 s"):
        frames.index_at(9.5)
    with pytest.raises(FrameLookupError, match="no frame has been received yet"):
        Frames([]).index_of(-1)


def test_snapshot_is_stable_while_the_camera_keeps_pushing():
    buf = FrameBuffer(max_frames=4)
    for i in range(4):
        buf.add(img(i), float(i))
    snap = buf.snapshot()

    def camera():
        for i in range(4, 200):
            buf.add(img(i % 255), float(i))

    t = threading.Thread(target=camera)
    t.start()
    t.join()
    assert [f.stamp for f in snap] == [0.0, 1.0, 2.0, 3.0]
    assert [f.stamp for f in buf.snapshot()] == [196.0, 197.0, 198.0, 199.0]
