"""The five pixel tools on generated pixels with known answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pixelis_ros.bench_tools import moving_square
from pixelis_ros.boxes import iou
from pixelis_ros.demo import make_sign_scene
from pixelis_ros.frames import Frame, Frames
from pixelis_ros.tools import ToolContext, Toolbox, ToolboxConfig


@pytest.fixture(scope="module")
def toolbox():
    return Toolbox()


def ctx_of(images, fps=10.0) -> ToolContext:
    return ToolContext(frames=Frames([Frame(img, i / fps) for i, img in enumerate(images)]))


def test_zoom_crops_the_right_pixels(toolbox):
    img = np.zeros((1080, 1920, 3), np.uint8)
    img[500:600, 800:900] = (255, 0, 0)
    result = toolbox.run("zoom", {"bbox_2d": [800, 500, 900, 600]}, ctx_of([img]))
    assert result.error is None
    out = result.images[0]
    assert out.shape == (400, 400, 3)  # 100 px enlarged by the 4x cap
    assert (out[..., 0] > 250).mean() > 0.99
    big = toolbox.run("zoom", {"bbox_2d": [0, 0, 1920, 1080]}, ctx_of([img])).images[0]
    assert max(big.shape[:2]) == 448  # large crops shrink to the target side


def test_zoom_then_ocr_reads_small_sign(toolbox):
    scene, (x1, y1, x2, y2), text = make_sign_scene(seed=3)
    ctx = ctx_of([scene])
    zoom = toolbox.run("zoom", {"bbox_2d": [x1 - 20, y1 - 20, x2 + 20, y2 + 20]}, ctx)
    ctx.observations.extend(zoom.images)
    read = toolbox.run("ocr", {"image": "obs:0"}, ctx)
    assert read.error is None
    assert read.data["text"].replace(" ", "").upper() == text.replace(" ", "")
    line = read.data["lines"][0]
    assert set(line) == {"text", "bbox_2d", "score"} and 0 < line["score"] <= 1


def test_ocr_region_boxes_are_in_image_pixels(toolbox):
    img = np.full((480, 640, 3), 255, np.uint8)
    cv2.putText(img, "ROBOT", (400, 300), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 3)
    result = toolbox.run("ocr", {"bbox_2d": [350, 220, 640, 340]}, ctx_of([img]))
    assert result.data["text"] == "ROBOT"
    bx1, by1, bx2, by2 = result.data["lines"][0]["bbox_2d"]
    assert 380 <= bx1 <= 420 and 250 <= by1 <= 290 and bx2 > 500 and by2 <= 320
    empty = toolbox.run("ocr", {"bbox_2d": [0, 0, 100, 100]}, ctx_of([img]))
    assert empty.error is None and empty.data["lines"] == []


def test_segment_grabcut_from_box_and_point(toolbox):
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (0, 0), 2)
    cv2.circle(img, (160, 120), 50, (230, 30, 30), -1)
    truth = (110, 70, 211, 171)
    by_box = toolbox.run("segment", {"bbox_2d": [100, 60, 220, 180]}, ctx_of([img]))
    assert by_box.error is None and iou(by_box.data["bbox_2d"], truth) > 0.9 and by_box.data["colour"] == "red"
    assert abs(by_box.data["area"] - np.pi * 50 ** 2) / (np.pi * 50 ** 2) < 0.1
    cx, cy = by_box.data["centroid"]
    assert abs(cx - 160) < 3 and abs(cy - 120) < 3
    by_point = toolbox.run("segment", {"point_2d": [160, 120]}, ctx_of([img]))
    assert by_point.error is None and by_point.mask.mask[120, 160]


@pytest.mark.parametrize("backend", ["csrt", "kcf", "mil"])
def test_track_follows_a_moving_object(backend):
    clip = moving_square(20)
    toolbox = Toolbox(ToolboxConfig(track_backend=backend))
    result = toolbox.run("track", {"bbox_2d": [50, 100, 110, 160]}, ctx_of(clip))
    assert result.error is None, result.error
    boxes = result.data["boxes"]
    assert len(boxes) == 20 and result.data["status"][0] == "tracked"
    for i in (5, 19):
        x, y = 50 + 3 * i, 100 + int(40 * np.sin(i / 10))
        assert boxes[i] is not None and iou(boxes[i], (x, y, x + 60, y + 60)) > 0.5, (i, boxes[i])
    assert len(result.images) == 3 and result.data["keyframes"] == [0, 10, 19]


def test_track_between_times_and_lost():
    clip = moving_square(20)
    clip[12:] = [np.zeros_like(clip[0])] * 8  # the camera goes dark: the object is lost
    result = Toolbox().run("track", {"bbox_2d": [50, 100, 110, 160], "start": "frame:0.5s", "end": "frame:1.9s"},
                           ToolContext(frames=Frames([Frame(img, i / 10) for i, img in enumerate(clip)])))
    assert result.error is None and result.data["start_frame"] == 5 and result.data["end_frame"] == 19
    assert "lost" in result.data["status"][7:]


def scripted_clip(n=30, size=(160, 120)):
    """Frames with known events: a square appears at 1.0 s, moves until 2.0 s, stays; the
    region (10..50) turns green from 2.5 s."""
    frames = []
    for i in range(n):
        img = np.full((size[1], size[0], 3), 90, np.uint8)
        if i >= 10:
            x = 80 + 2 * (min(i, 20) - 10)
            cv2.rectangle(img, (x, 60), (x + 30, 90), (250, 250, 250), -1)
        if i >= 25:
            img[10:50, 10:50] = (20, 200, 20)
        frames.append(img)
    return frames


@pytest.mark.parametrize("args, spans", [
    ({"predicate": "appear", "bbox_2d": [70, 50, 150, 100]}, [[1.0, 3.0]]),
    ({"predicate": "change", "bbox_2d": [70, 50, 150, 100]}, [[1.0, 2.1]]),
    ({"predicate": "motion_stop", "bbox_2d": [70, 50, 150, 100]}, [[2.1, 3.0]]),
    ({"predicate": "colour", "value": "green"}, [[2.5, 3.0]]),
    ({"predicate": "colour", "value": "20,200,20", "bbox_2d": [0, 0, 60, 60]}, [[2.5, 3.0]]),
    ({"predicate": "disappear", "bbox_2d": [70, 50, 150, 100], "end": "frame:1.5s"}, []),
])
def test_temporal_predicates(toolbox, args, spans):
    result = toolbox.run("temporal", args, ctx_of(scripted_clip()))
    assert result.error is None, result.error
    assert result.data["spans"] == spans


def test_temporal_disappear_and_text(toolbox):
    frames = []
    for i in range(12):
        img = np.full((200, 320, 3), 255, np.uint8)
        if 3 <= i < 7:
            cv2.putText(img, "STOP 17", (40, 120), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 3)
        frames.append(img)
    ctx = ctx_of(frames)
    assert toolbox.run("temporal", {"predicate": "text", "value": "17"}, ctx).data["spans"] == [[0.3, 0.7]]
    assert toolbox.run("temporal", {"predicate": "text", "value": "1"}, ctx).data["spans"] == []  # whole tokens only
    assert toolbox.run("temporal", {"predicate": "disappear"}, ctx).data["spans"] == [[0.7, 1.2]]
