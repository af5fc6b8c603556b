"""The annotated image: labels always fit or are dropped, on any frame size (issue 13)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from pixelis_ros.render import _label


def test_labels_terminate_on_every_frame_size():
    # The old cut-to-width loop never ended when even a shortened label did not fit (a box
    # within ~45 px of the right edge with a 5+ character label, or any frame under ~50 px
    # wide). A fresh interpreter with a timeout turns such a hang into a failure.
    code = """
import numpy as np
from pixelis_ros.agent import Agent
from pixelis_ros.frames import FrameBuffer
from pixelis_ros.policy import ScriptedPolicy
from pixelis_ros.render import _label, render_episode
for w, h in [(1, 1), (2, 3), (7, 5), (30, 20), (49, 49), (50, 50), (97, 64), (320, 240)]:
    img = np.zeros((h, w, 3), np.uint8)
    for x in (0, w // 2, max(0, w - 45), w - 1):
        for text in ("zoom", "segment", '"RAMP 45 LONG SIGN TEXT"', "Q: " + "what does it say? " * 40):
            _label(img, text, x, h // 2, (255, 255, 255), 0.4)
    buf = FrameBuffer()
    buf.add(np.full((h, w, 3), 90, np.uint8), 0.0)
    box = [max(0, w - 30), 0, w, h]
    script = ('<tool_call>{"name": "zoom", "arguments": {"bbox_2d": %s}}</tool_call><answer>a long answer</answer>' % box)
    episode = Agent(ScriptedPolicy(script)).run("a question that is far too long for a tiny frame?", buf)
    assert render_episode(episode, buf.snapshot()).shape == (h, w, 3)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_label_near_the_right_edge_slides_left_whole():
    img = np.zeros((240, 320, 3), np.uint8)
    _label(img, "segment", 310, 100, (255, 255, 255), 0.4)
    cols = np.nonzero(img.any(axis=(0, 2)))[0]
    assert cols.min() < 280 and cols.max() <= 319  # the whole word, inside the frame


def test_a_label_wider_than_the_frame_is_shortened_or_dropped():
    img = np.zeros((40, 60, 3), np.uint8)
    _label(img, "A: " + "x" * 500, 0, 20, (255, 255, 255), 0.4)
    assert img.any()  # a shortened "A: x..." fits 60 px
    tiny = np.zeros((4, 4, 3), np.uint8)
    _label(tiny, "segment", 2, 2, (255, 255, 255), 0.4)
    assert not tiny.any()  # not even "s..." fits: nothing drawn
