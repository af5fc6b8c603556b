"""Argument validation: every bad call gets a precise error, and fuzzing finds no crash."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pixelis_ros.frames import Frame, Frames
from pixelis_ros.tools import ToolContext, Toolbox, ToolboxConfig


@pytest.fixture(scope="module")
def toolbox():
    return Toolbox()


def context(n: int = 3, size=(320, 240)) -> ToolContext:
    rng = np.random.default_rng(0)
    return ToolContext(frames=Frames([Frame(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), i * 0.1) for i in range(n)]))


@pytest.mark.parametrize("name, arguments, message", [
    ("crop", {}, "unknown tool 'crop'; known tools: ['ocr', 'segment', 'temporal', 'track', 'zoom']"),
    ("zoom", {}, "tool 'zoom': missing required argument(s) ['bbox_2d']"),
    ("zoom", {"bbox_2d": [0, 0, 50, 50], "colour": "red"}, "tool 'zoom': unknown argument(s) ['colour']"),
    ("zoom", {"bbox_2d": "0,0,50,50"}, "argument 'bbox_2d' must be a list of 4 numbers"),
    ("zoom", {"bbox_2d": [0, 0, 50]}, "argument 'bbox_2d' must be a list of 4 numbers"),
    ("zoom", {"bbox_2d": [0, 0, True, 50]}, "argument 'bbox_2d[2]' must be a number, got bool"),
    ("zoom", {"bbox_2d": [0, 0, 50, 50], "image": 3}, "argument 'image' must be a string"),
    ("zoom", {"bbox_2d": [400, 300, 500, 400]}, "lies outside the 320x240 image"),
    ("zoom", {"bbox_2d": [10, 10, 30, 100]}, "is 20x90 px inside the 320x240 image; the minimum side is 28 px"),
    ("zoom", {"bbox_2d": [50, 50, 10, 100]}, "is inverted or empty"),
    ("zoom", {"bbox_2d": [0, 0, 50, 50], "image": "obs:0"}, "unknown image reference 'obs:0': earlier tool outputs are none yet"),
    ("zoom", {"bbox_2d": [0, 0, 50, 50], "image": "camera"}, "unknown image reference 'camera'"),
    ("zoom", {"bbox_2d": [0, 0, 50, 50], "image": "frame:7"}, "frame index 7 is outside the buffer (it holds 3 frames"),
    ("track", {"bbox_2d": [0, 0, 50, 50], "end": "frame:9.5s"}, "time 9.5 s is outside the buffer, which covers 0..0.3 s"),
    ("track", {"bbox_2d": [0, 0, 50, 50], "start": "frame:2", "end": "frame:1"}, "track needs end after start"),
    ("temporal", {"predicate": "smell"}, "argument 'predicate' must be one of ['change', 'appear'"),
    ("temporal", {"predicate": "colour"}, "the 'colour' predicate needs a value"),
    ("temporal", {"predicate": "colour", "value": "octarine"}, "unknown colour 'octarine'"),
    ("segment", {}, "segment needs bbox_2d or point_2d"),
    ("segment", {"point_2d": [500, 5]}, "point_2d [500, 5] lies outside the 320x240 image"),
])
def test_bad_calls_get_precise_errors(toolbox, name, arguments, message):
    result = toolbox.run(name, arguments, context())
    assert result.error is not None and message in result.error, result.error
    assert result.response_json() == {"error": result.error}


def test_nan_and_aspect(toolbox):
    ctx = context(size=(4000, 100))
    assert "must be finite" in toolbox.run("zoom", {"bbox_2d": [0, 0, float("nan"), 50]}, ctx).error
    assert "aspect ratio 110.0 > 100" in toolbox.run("zoom", {"bbox_2d": [0, 0, 3300, 30]}, ctx).error


def test_image_over_pixel_cap():
    result = Toolbox(ToolboxConfig(max_image_pixels=1000)).run("zoom", {"bbox_2d": [0, 0, 50, 50]}, context())
    assert "has 76800 pixels, over the cap of 1000" in result.error


def test_partly_outside_box_is_clamped(toolbox):
    result = toolbox.run("zoom", {"bbox_2d": [-20, -20, 100, 60]}, context())
    assert result.error is None and result.data["bbox_2d"] == [0.0, 0.0, 100.0, 60.0]


number = st.one_of(st.integers(-10**5, 10**5), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none())
value = st.one_of(number, st.text(max_size=12), st.lists(number, max_size=6),
                  st.sampled_from(["frame:-1", "frame:0", "frame:0.15s", "frame:99", "obs:0", "obs:-1", "frame:-4", "frame:1e3s"]))
names = st.sampled_from(["zoom", "ocr", "segment", "track", "temporal", "crop", ""])
keys = st.sampled_from(["bbox_2d", "image", "point_2d", "start", "end", "predicate", "value", "x"])
arguments = st.one_of(st.dictionaries(keys, value, max_size=5), value)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names, arguments)
def test_fuzzed_calls_never_raise(name, args):
    result = FUZZ_TOOLBOX.run(name, args, FUZZ_CTX)
    assert result.error is None or (isinstance(result.error, str) and result.error)
    # "<tool> failed: <Exception>" is the Toolbox's catch-all for exceptions a tool did not expect.
    assert not (result.error or "").startswith(f"{name} failed:"), result.error
    assert isinstance(result.response_json(), dict)


FUZZ_TOOLBOX = Toolbox(enabled=["zoom", "segment", "track", "temporal", "ocr"])
FUZZ_CTX = context(n=3, size=(96, 64))


def test_backend_configuration_errors_are_observations():
    ctx = context()
    result = Toolbox(ToolboxConfig(track_backend="nope")).run("track", {"bbox_2d": [0, 0, 50, 50]}, ctx)
    assert result.error == "unknown track backend 'nope'; known: csrt, kcf, mil, sam2"
    paddle = ToolboxConfig(ocr_backend="paddleocr", ocr_options={"det_model_dir": "/no/det", "rec_model_dir": "/no/rec"})
    result = Toolbox(paddle).run("ocr", {}, ctx)
    assert "paddleocr" in result.error.lower() or "/no/det" in result.error
    sam = ToolboxConfig(segment_backend="sam2", segment_options={"checkpoint": "/no/sam2.pt"})
    assert "only .safetensors weights are loaded" in Toolbox(sam).run("segment", {"point_2d": [5, 5]}, ctx).error


# --- hardening (issue 13): library errors in our words, bounded echoes -------------------------

@pytest.mark.parametrize("name, arguments, message", [
    ("zoom", {"bbox_2d": [0, 0, 10 ** 400, 50]},
     "tool 'zoom': argument 'bbox_2d[2]' is out of range: <an integer of about 401 digits>; numbers must lie within ±1e308"),
    ("zoom", {"bbox_2d": [0, 0, 50, 50], "image": "frame:" + "9" * 5000},
     "a reference has at most 32 characters"),
    ("track", {"bbox_2d": [0, 0, 50, 50], "start": "frame:" + "1" * 4400}, "a reference has at most 32 characters"),
    ("segment", {"bbox_2d": [0, 0, 320, 240]}, "the box covers the whole 320x240 image, which leaves GrabCut no background"),
    ("segment", {"bbox_2d": [-50, -50, 900, 900]}, "the box covers the whole 320x240 image"),
    ("temporal", {"predicate": "text", "value": "\u200b "}, "the 'text' predicate needs a value (got 2 blank or zero-width"),
    ("temporal", {"predicate": "colour", "value": "c" * 1_000_000}, "unknown colour 'cccc"),
    ("zoom", {"bbox_2d": "b" * 1_000_000}, "(1000000 characters)"),
    ("zoom", {"bbox_2d": [0, 0, 50, 50], "k" * 1_000_000: 1}, "unknown argument(s) ['kkkk"),
    ("z" * 1_000_000, {}, "unknown tool 'zzzz"),
])
def test_hostile_values_get_bounded_errors_in_our_words(toolbox, name, arguments, message):
    result = toolbox.run(name, arguments, context())
    assert result.error is not None and message in result.error, result.error[:500]
    assert len(result.error) < 600 and " failed: " not in result.error  # not a raw library exception


def test_a_point_on_a_small_image_segments_instead_of_asserting(toolbox):
    # The box GrabCut gets around a point is ours: on an image smaller than it, it is shrunk so
    # some background remains, rather than tripping OpenCV's assertion.
    img = np.zeros((64, 96, 3), np.uint8)
    img[20:44, 30:66] = (255, 0, 0)
    ctx = ToolContext(frames=Frames([Frame(img, 0.0)]))
    result = toolbox.run("segment", {"point_2d": [48, 32]}, ctx)
    assert result.error is None and result.data["colour"] == "red", result.error
    assert toolbox.run("segment", {"point_2d": [0, 0]}, ctx).error is None  # a corner point stays inside
