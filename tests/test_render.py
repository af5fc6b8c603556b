"""The annotated image: readable at any frame size, labels never collide, zooms show as insets,
tracks show their direction, and odd episodes never raise (issue 13 and its readability follow-up)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from pixelis_ros.agent import Agent
from pixelis_ros.cota import Step
from pixelis_ros.episode import Episode, StepRecord
from pixelis_ros.frames import FrameBuffer
from pixelis_ros.policy import ScriptedPolicy
from pixelis_ros.render import COLOURS, _fit, annotate, render_episode
from pixelis_ros.render_layout import Layout, intersects, style_for
from pixelis_ros.tools.base import Detection, MaskSummary, ToolResult


def episode_of(*results: ToolResult, answer: str | None = "an answer") -> Episode:
    return Episode("what is it?", [StepRecord(Step(), r) for r in results], answer=answer, stop_reason="answer")


def frames_of(*images: np.ndarray):
    buf = FrameBuffer()
    for k, img in enumerate(images):
        buf.add(img, float(k))
    return buf.snapshot()


def assert_disjoint_and_inside(layout: Layout) -> None:
    for r in layout.taken:
        assert 0 <= r[0] < r[2] <= layout.width and 0 <= r[1] < r[3] <= layout.height, r
    for a, b in itertools.combinations(layout.taken, 2):
        assert not intersects(a, b), (a, b)


def test_labels_terminate_on_every_frame_size():
    # The old cut-to-width loop never ended when even a shortened label did not fit (a box
    # within ~45 px of the right edge with a 5+ character label, or any frame under ~50 px
    # wide). A fresh interpreter with a timeout turns such a hang into a failure.
    code = """
import numpy as np
from pixelis_ros.agent import Agent
from pixelis_ros.frames import FrameBuffer
from pixelis_ros.policy import ScriptedPolicy
from pixelis_ros.render import _fit, render_episode
for w, h in [(1, 1), (2, 3), (7, 5), (30, 20), (49, 49), (50, 50), (97, 64), (320, 240)]:
    for text in ("zoom", "segment", '"RAMP 45 LONG SIGN TEXT"', "Q: " + "what does it say? " * 400):
        for font in (0.4, 3.0):
            fitted = _fit(text, w, font)
            assert fitted is None or fitted[1] <= w
    buf = FrameBuffer()
    buf.add(np.full((h, w, 3), 90, np.uint8), 0.0)
    box = [max(0, w - 30), 0, w, h]
    script = ('<tool_call>{"name": "zoom", "arguments": {"bbox_2d": %s}}</tool_call><answer>a long answer</answer>' % box)
    episode = Agent(ScriptedPolicy(script)).run("a question that is far too long for a tiny frame?" * 50, buf)
    assert render_episode(episode, buf.snapshot()).shape == (h, w, 3)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_label_wider_than_the_frame_is_shortened_or_dropped():
    text, w, _ = _fit("A: " + "x" * 500, 60, 0.4)
    assert text.startswith("A: x") and text.endswith("...") and w <= 60
    assert _fit("segment", 4, 0.4) is None  # not even "s..." fits: no label rather than a smear


def test_placed_labels_never_intersect_and_stay_inside():
    layout = Layout(320, 240)
    boxes = [(100 + 3 * k, 100 + 2 * k, 140 + 3 * k, 112 + 2 * k) for k in range(12)] + [(300, 230, 330, 260), (0, 0, 0, 0)]
    placed = [layout.place(90, 15, box) for box in boxes * 3]
    assert_disjoint_and_inside(layout)
    assert placed[0] == (100, 85, 190, 100)  # the first label sits right above its box
    assert len(layout.taken) == sum(p is not None for p in placed) > 12


def test_a_full_layout_refuses_instead_of_overlapping():
    layout = Layout(100, 30)
    assert layout.place(100, 30, (10, 10, 20, 20)) == (0, 0, 100, 30)
    assert layout.place(5, 5, (10, 10, 20, 20)) is None and layout.below(5, 5, 0, 0) is None
    assert layout.place(101, 5, (0, 0, 1, 1)) is None and layout.corner(5, 31, []) is None


def test_crowded_ocr_labels_fall_back_to_a_legend_without_collisions():
    # Twelve OCR lines stacked a few pixels apart (as OCR of a dense sign returns): touching
    # spots run out, so the rest become numbered legend lines under the header.
    dets = [Detection((100 + 3 * k, 100 + 4 * k, 140 + 3 * k, 112 + 4 * k), "frame:-1", label=f"LINE {k} TEXT") for k in range(12)]
    frames = frames_of(np.full((240, 320, 3), 120, np.uint8))
    img, layout = annotate(episode_of(ToolResult(detections=dets)), frames)
    assert_disjoint_and_inside(layout)
    header_bottom = layout.taken[1][3]
    legend = [r for r in layout.taken[2:] if r[0] == 0 and r[1] >= header_bottom]
    assert legend and all(a[3] <= b[1] for a, b in zip(legend, legend[1:]))  # a column, in order
    assert (img == COLOURS["ocr"]).all(axis=2).any()


def test_a_zoom_shows_its_view_as_an_inset():
    frame = np.full((480, 640, 3), 100, np.uint8)
    frame[200:260, 300:360] = (255, 0, 0)  # a red patch only inside the zoomed region
    script = '<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [280, 180, 380, 280]}}</tool_call><answer>red</answer>'
    buf = FrameBuffer()
    buf.add(frame, 0.0)
    episode = Agent(ScriptedPolicy(script)).run("what colour?", buf)
    img, layout = annotate(episode, buf.snapshot())
    red = (img == (255, 0, 0)).all(axis=2)
    red[180:280, 280:380] = False
    assert red.sum() > 60 * 60  # the crop, larger than on the frame, appears elsewhere
    ys, xs = np.nonzero(red)
    inset = next(r for r in layout.taken if r[0] <= xs.min() and xs.max() < r[2] and r[1] <= ys.min() and ys.max() < r[3])
    assert (inset[2] - inset[0]) <= 0.35 * 480 + 10  # small: a corner of the frame, not a cover
    assert_disjoint_and_inside(layout)


def test_a_track_ends_in_an_arrowhead_pointing_its_way():
    frames = frames_of(*[np.zeros((240, 320, 3), np.uint8) for _ in range(6)])
    boxes = [(40 + 40 * k, 110, 60 + 40 * k, 130) for k in range(6)]  # moving right along y = 120
    dets = [Detection(b, f"frame:{k}", label="track") for k, b in enumerate(boxes)]
    img = render_episode(episode_of(ToolResult(detections=dets)), frames)
    track = (np.abs(img.astype(int) - COLOURS["track"]).sum(axis=2) < 120)
    assert track[113:118, 241:249].any() and track[122:127, 241:249].any()  # both wings, behind the tip at x = 250
    assert not track[113:118, 251:259].any()  # nothing ahead of it


def test_annotations_grow_with_the_frame():
    def header_and_line(w, h):
        f = w / 320
        det = Detection((100 * f, 80 * f, 200 * f, 160 * f), "frame:-1", label="zoom")
        img, layout = annotate(episode_of(ToolResult(detections=[det])), frames_of(np.zeros((h, w, 3), np.uint8)))
        column = (img[:, int(150 * f)] == COLOURS["zoom"]).all(axis=1)
        return layout.taken[0][3] - layout.taken[0][1], int(column[int(70 * f):int(90 * f)].sum())

    small, big = header_and_line(320, 240), header_and_line(4000, 2700)
    assert big[0] >= 5 * small[0] and big[1] >= 4 * small[1] >= 4  # text and strokes scale with the photo
    assert style_for(4000, 2700).font > 2 and style_for(320, 240).font == 0.4
    assert style_for(4000, 2700).inset > 5 * style_for(320, 240).inset


@pytest.mark.parametrize("frame", [np.full((240, 320), 80, np.uint8), np.full((1, 1, 3), 80, np.uint8),
                                   np.full((50, 7, 1), 80, np.uint8), np.full((120, 160, 4), 80, np.uint16)])
def test_odd_episodes_draw_less_and_never_raise(frame):
    h, w = frame.shape[:2]
    odd = [Detection((-50, -50, -10, -10), "frame:-1", label="outside"), Detection((5, 5, 5, 5), "frame:-1", label="zero"),
           Detection((float("nan"), 0, 1, 1), "frame:-1", label="zoom"), Detection((0, 0, 1e9, float("inf")), "frame:-1", label="x"),
           Detection((3, 3, 9, 9), "frame:7", label="missing frame"), Detection((1, 1, 4, 4), "obs:9", label="unknown obs"),
           Detection((0, 0, w, h), "frame:-1", label="track"), Detection((0, 0, w, h), "frame:-1", label="track"),
           Detection((1e12, -1e12, 2e12, 1e15), "frame:-1", label="track"), Detection((1e12, 0, 2e12, 1), "frame:-1", label="zoom")]
    mask = MaskSummary("frame:-1", np.ones((h + 1, w), bool), (0, 0, w, h), area=1, centroid=(0, 0))  # another size
    results = [ToolResult(detections=odd, images=[np.zeros((0, 0, 3), np.uint8)], mask=mask, spans=[(0.0, 1.0)]),
               ToolResult(error="failed"), ToolResult(detections=[Detection((0, 0, w, h), "frame:-1", label="zoom")], images=[frame])]
    frames = frames_of(frame)
    for episode in (episode_of(), episode_of(*results, answer=None), Episode("")):
        img, layout = annotate(episode, frames)
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
        assert_disjoint_and_inside(layout)
    assert render_episode(episode_of(*results), frames_of()).shape == (240, 320, 3)  # no frames at all


def test_the_vqa_photo_with_zoom_and_ocr_reads_cleanly(real_data):
    # The 4000x2700 photo whose two OCR lines overlap on the mug: labels must not collide.
    info = json.loads((real_data / "vqa_hr" / "questions.jsonl").read_text().splitlines()[0])
    import cv2
    frame = cv2.imread(str(real_data / "vqa_hr" / info["image"]))[:, :, ::-1]
    buf = FrameBuffer()
    buf.add(frame, 0.0)
    x1, y1, x2, y2 = info["target_bbox_xyxy"]
    script = ('<tool_call>{"name": "zoom", "arguments": {"bbox_2d": [%d, %d, %d, %d]}}</tool_call>'
              '<tool_call>{"name": "ocr", "arguments": {"image": "obs:0"}}</tool_call><answer>%s</answer>'
              % (x1 - 50, y1 - 35, x2 + 50, y2 + 35, info["answer"]))
    episode = Agent(ScriptedPolicy(script)).run(info["question"], buf)
    img, layout = annotate(episode, buf.snapshot())
    assert img.shape == frame.shape
    assert_disjoint_and_inside(layout)
    assert len(layout.taken) >= 2 + 1 + 1 + 1  # header, inset panel, zoom label, at least one OCR label


def test_many_zooms_share_half_the_frame_width():
    crop = np.full((100, 100, 3), 200, np.uint8)
    results = [ToolResult(detections=[Detection((60 * k, 300, 60 * k + 50, 350), "frame:-1", label="zoom")], images=[crop])
               for k in range(8)]
    img, layout = annotate(episode_of(*results), frames_of(np.zeros((480, 640, 3), np.uint8)))
    panel = layout.taken[2]  # after the two header lines
    assert panel[2] - panel[0] <= 320 and (img[panel[1]:panel[3], panel[0]:panel[2]] == 200).all(axis=2).sum() >= 4 * 24 * 24
    assert_disjoint_and_inside(layout)
