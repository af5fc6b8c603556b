"""media: image files, frame folders and videos loaded as Frames, with clear errors."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from pixelis_ros.frames import Frames
from pixelis_ros.media import (
    MediaError, _read_frames, frames_from_image, load_frame_dir,
    load_frames, load_image, load_video,
)

COLOURS = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20)]  # RGB


def write_rgb(path: Path, img: np.ndarray) -> Path:
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    assert cv2.imwrite(str(path), bgr)
    return path


def solid(colour: tuple[int, int, int], h: int = 30, w: int = 40) -> np.ndarray:
    return np.full((h, w, 3), colour, np.uint8)


def write_video(path: Path, n: int = 12, fps: float = 5.0, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        writer.write(cv2.cvtColor(solid(COLOURS[i % 4], size[1], size[0]), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def close(img: np.ndarray, colour: tuple[int, int, int], tol: int = 12) -> bool:
    return bool(np.abs(img.astype(int) - colour).mean(axis=(0, 1)).max() <= tol)


# --- images --------------------------------------------------------------------------------------

def test_load_image_png_is_rgb(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    out = load_image(write_rgb(tmp_path / "a.png", img))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, img)


@pytest.mark.parametrize("name", ["a.jpg", "a.bmp"])
def test_load_image_jpeg_and_bmp(tmp_path, name):
    assert close(load_image(write_rgb(tmp_path / name, solid((200, 60, 30)))), (200, 60, 30), tol=3)


def test_load_image_mono_and_16_bit_become_rgb8(tmp_path):
    gray = load_image(write_rgb(tmp_path / "g.png", np.full((4, 5), 77, np.uint8)))
    assert gray.shape == (4, 5, 3) and (gray == 77).all()
    deep = load_image(write_rgb(tmp_path / "d.png", np.full((4, 5), 0x4321, np.uint16)))
    assert deep.dtype == np.uint8 and (deep == 0x43).all()


def test_load_image_errors(tmp_path):
    with pytest.raises(MediaError, match=r"missing.png: no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(MediaError, match=r"is a folder, not an image file"):
        load_image(tmp_path)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty.jpg: no image data \(0 bytes\)"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "notes.png").write_bytes(b"not an image at all")
    with pytest.raises(MediaError, match=r"notes.png: cannot decode 19 bytes as an image"):
        load_image(tmp_path / "notes.png")


def test_load_image_refuses_too_many_pixels(tmp_path):
    path = write_rgb(tmp_path / "a.png", solid((1, 2, 3)))
    with pytest.raises(MediaError, match=r"a.png: image is 40x30 = 1200 pixels, more than max_pixels=1000"):
        load_image(path, max_pixels=1000)
    assert load_image(path, max_pixels=1200).shape == (30, 40, 3)


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    # A png header claiming 100000x100000 followed by nothing decodable: the size check must
    # fire before any decoding is attempted.
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(header + bytes(64))
    with pytest.raises(MediaError, match=r"100000x100000 = 10000000000 pixels"):
        load_image(tmp_path / "bomb.png")


def test_frames_from_image(tmp_path):
    frames = frames_from_image(write_rgb(tmp_path / "a.png", solid((5, 6, 7))))
    assert isinstance(frames, Frames) and len(frames) == 1
    assert frames[0].stamp == 0.0 and frames[0].size == (40, 30)


# --- frame folders -------------------------------------------------------------------------------

def test_frame_dir_natural_order_and_stamps(tmp_path):
    for name, colour in zip(["10.png", "2.jpg", "frame_1.bmp", "1.png"], COLOURS):
        write_rgb(tmp_path / name, solid(colour))
    (tmp_path / "notes.txt").write_text("ignored")
    frames = load_frame_dir(tmp_path, fps=4.0)
    # 1.png, 2.jpg, 10.png, frame_1.bmp
    expected = [COLOURS[3], COLOURS[1], COLOURS[0], COLOURS[2]]
    assert len(frames) == 4
    assert [f.stamp for f in frames] == [0.0, 0.25, 0.5, 0.75]
    assert all(close(f.image, c) for f, c in zip(frames, expected))


def test_frame_dir_uses_img_subfolder(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(3):
        write_rgb(tmp_path / "img" / f"{i + 1:04d}.jpg", solid(COLOURS[i]))
    (tmp_path / "groundtruth_rect.txt").write_text("1,2,3,4\n")
    assert len(load_frame_dir(tmp_path)) == 3


def test_frame_dir_errors(tmp_path):
    with pytest.raises(MediaError, match=r"holds no image files \(.jpg, .jpeg, .png, .bmp\)"):
        load_frame_dir(tmp_path)
    with pytest.raises(MediaError, match=r"nowhere: no such folder"):
        load_frame_dir(tmp_path / "nowhere")
    write_rgb(tmp_path / "a.png", solid((1, 1, 1)))
    with pytest.raises(MediaError, match=r"is a file, not a folder"):
        load_frame_dir(tmp_path / "a.png")
    with pytest.raises(MediaError, match=r"fps must be a positive number, got 0"):
        load_frame_dir(tmp_path, fps=0)


# --- videos --------------------------------------------------------------------------------------

def test_load_video_frames_stamps_and_colours(tmp_path):
    frames = load_video(write_video(tmp_path / "v.mp4"))
    assert len(frames) == 12
    assert [f.stamp for f in frames] == pytest.approx([i / 5 for i in range(12)])
    assert frames[0].size == (64, 48) and frames[0].image.dtype == np.uint8
    assert all(close(f.image, COLOURS[i % 4]) for i, f in enumerate(frames))


def test_load_video_stride_and_max_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4")
    strided = load_video(path, stride=3)
    assert [f.stamp for f in strided] == pytest.approx([0.0, 0.6, 1.2, 1.8])
    assert all(close(f.image, COLOURS[(3 * i) % 4]) for i, f in enumerate(strided))
    assert [f.stamp for f in load_video(path, max_frames=2, stride=2)] == pytest.approx([0.0, 0.4])


def test_load_video_errors(tmp_path):
    with pytest.raises(MediaError, match=r"gone.mp4: no such file"):
        load_video(tmp_path / "gone.mp4")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    with pytest.raises(MediaError, match=r"text.mp4: (OpenCV cannot open it as a video|the video yielded no frame)"):
        load_video(tmp_path / "text.mp4")
    path = write_video(tmp_path / "v.mp4", n=2)
    with pytest.raises(MediaError, match=r"stride must be >= 1, got 0"):
        load_video(path, stride=0)
    with pytest.raises(MediaError, match=r"max_frames must be >= 1"):
        load_video(path, max_frames=0)


class ZeroFpsCapture:
    """Stands in for a cv2.VideoCapture whose container reports no frame rate."""

    def __init__(self, msec: list[float]):
        self.msec, self.pos = msec, -1

    def get(self, prop: int) -> float:
        return 0.0 if prop == cv2.CAP_PROP_FPS else self.msec[self.pos]

    def grab(self) -> bool:
        self.pos += 1
        return self.pos < len(self.msec)

    def read(self) -> tuple[bool, np.ndarray | None]:
        return (True, np.zeros((2, 2, 3), np.uint8)) if self.grab() else (False, None)


def test_zero_fps_falls_back_to_frame_timestamps():
    frames = _read_frames(ZeroFpsCapture([0.0, 40.0, 120.0, 160.0]), max_frames=None, stride=1)  # type: ignore[arg-type]
    assert [f.stamp for f in frames] == pytest.approx([0.0, 0.04, 0.12, 0.16])


# --- load_frames ---------------------------------------------------------------------------------

def test_load_frames_takes_exactly_one_source(tmp_path):
    image = write_rgb(tmp_path / "a.png", solid((1, 2, 3)))
    with pytest.raises(MediaError, match=r"give exactly one of image, frames_dir or video \(got none\)"):
        load_frames()
    with pytest.raises(MediaError, match=r"\(got image, video\)"):
        load_frames(image=image, video=tmp_path / "v.mp4")
    assert len(load_frames(image=image)) == 1
    assert len(load_frames(frames_dir=tmp_path)) == 1
    assert len(load_frames(video=write_video(tmp_path / "v.mp4", n=3))) == 3


# --- real data -----------------------------------------------------------------------------------

def test_real_video_counter(real_data):
    frames = load_video(real_data / "temporal" / "pyscenedetect_counter.mp4")
    assert len(frames) == 30
    assert [f.stamp for f in frames] == pytest.approx([i / 10 for i in range(30)])
    assert frames[0].stamp == 0.0 and frames[-1].stamp == pytest.approx(2.9)
    assert frames[0].size == (1920, 1080) and frames.period == pytest.approx(0.1)


def test_real_otb_crossing_frame_dir(real_data):
    frames = load_frame_dir(real_data / "tracking" / "otb_crossing")
    assert len(frames) == 120
    assert {f.size for f in frames} == {(360, 240)}
    assert frames[1].stamp == pytest.approx(1 / 30)
