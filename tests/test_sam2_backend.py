"""The sam2 segment/track backends, on SAM 2.1 tiny built from its config with random weights.

Random weights give arbitrary masks, so these tests check the plumbing (shapes, types, boxes,
stopping, checkpoint and config handling), not segmentation quality. Where a test needs a known
mask it sets the mask threshold to -inf, at which every pixel of every mask is foreground. One
image embedding costs ~4 s on a 2-core CPU; the file keeps to a handful of them.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sam2 = pytest.importorskip("sam2")
torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from pixelis_ros.frames import Frame, Frames  # noqa: E402
from pixelis_ros.tools import sam2_backend  # noqa: E402
from pixelis_ros.tools.base import ToolContext, ToolError  # noqa: E402
from pixelis_ros.tools.segment import SEGMENT_BACKENDS, SegmentArgs, SegmentTool  # noqa: E402
from pixelis_ros.tools.track import TRACK_BACKENDS, TrackArgs, TrackTool  # noqa: E402

CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
BOX = (80.0, 96.0, 176.0, 160.0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2(CONFIG, ckpt_path=None, device="cpu")
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_t_random.safetensors"
    safetensors_torch.save_model(model, str(path))  # save_model copes with shared tensors
    return path


def scene(dx: int = 0) -> np.ndarray:
    """256x256 grey image with a filled red rectangle, shifted right by ``dx``."""
    rgb = np.full((256, 256, 3), 90, np.uint8)
    rgb[100:156, 84 + dx:172 + dx] = (220, 40, 40)
    return rgb


def test_registered_in_both_families():
    assert SEGMENT_BACKENDS["sam2"] is sam2_backend.Sam2Segmenter
    assert TRACK_BACKENDS["sam2"] is sam2_backend.Sam2Tracker


def test_segment_tool_box(checkpoint):
    """At a mask threshold of -inf every finite logit is foreground, so whatever the random weights
    the backend must return the whole frame as the mask (an empty or NaN mask fails), and the
    tool's summary of that mask is known by hand."""
    tool = SegmentTool(backend="sam2", checkpoint=str(checkpoint), device="cpu", mask_threshold=float("-inf"))
    ctx = ToolContext(frames=Frames([Frame(image=scene(), stamp=0.0)]))
    result = tool.run(SegmentArgs(image="frame:0", bbox_2d=BOX), ctx)
    mask = result.mask.mask
    assert mask.shape == (256, 256) and mask.dtype == np.bool_ and mask.all()
    assert result.data["area"] == result.mask.area == 256 * 256
    assert result.data["bbox_2d"] == [0.0, 0.0, 256.0, 256.0]
    assert result.data["centroid"] == [127.5, 127.5]
    assert result.images and result.images[0].shape == (256, 256, 3)


def test_segment_point_prompt_shares_the_loaded_model(checkpoint):
    segmenter = sam2_backend.Sam2Segmenter(checkpoint=str(checkpoint), device="cpu")
    mask = segmenter(scene(), None, (128.0, 128.0))
    assert mask.shape == (256, 256) and mask.dtype == np.bool_
    # a second backend instance on the same checkpoint reuses the model instead of loading again
    assert sam2_backend.Sam2Tracker(checkpoint=str(checkpoint), device="cpu").model is segmenter.model


def test_track_tool(checkpoint):
    """As for segmenting: at a threshold of -inf every propagated mask is the whole frame, so each
    later frame must get the full-frame box (a lost track, ``None``, fails)."""
    tool = TrackTool(backend="sam2", checkpoint=str(checkpoint), device="cpu", mask_threshold=float("-inf"))
    frames = Frames([Frame(image=scene(dx), stamp=0.1 * i) for i, dx in enumerate((0, 6, 12))])
    result = tool.run(TrackArgs(bbox_2d=BOX, start="frame:0", end="frame:2"), ToolContext(frames=frames))
    boxes = result.data["boxes"]
    assert len(boxes) == 3 and "stopped_early" not in result.data
    assert boxes[0] == list(BOX)
    assert boxes[1:] == [[0.0, 0.0, 256.0, 256.0]] * 2


def test_track_honours_should_stop(checkpoint):
    tracker = sam2_backend.Sam2Tracker(checkpoint=str(checkpoint), device="cpu")
    asked: list[int] = []

    def should_stop() -> bool:  # let one frame through, then stop
        asked.append(1)
        return len(asked) > 1

    boxes = tracker([scene(), scene(4), scene(8), scene(12)], BOX, should_stop)
    assert len(boxes) == 2 and len(asked) == 2
    assert boxes[0] == BOX


def test_pickle_checkpoint_refused(tmp_path):
    pt = tmp_path / "sam2.1_hiera_tiny.pt"
    pt.write_bytes(b"not loaded")
    with pytest.raises(ToolError, match=r"safetensors") as e:
        SegmentTool(backend="sam2", checkpoint=str(pt))
    assert "save_file" in str(e.value) and "pickle" in str(e.value)


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "sam2.safetensors"
    with pytest.raises(ToolError, match="does not exist") as e:
        TrackTool(backend="sam2", checkpoint=str(missing))
    assert str(missing) in str(e.value)


def test_wrong_keys_are_named(checkpoint, tmp_path):
    sd = safetensors_torch.load_file(str(checkpoint))
    sd.pop("no_mem_embed")
    sd["extra.weight"] = torch.zeros(2)
    bad = tmp_path / "bad.safetensors"
    safetensors_torch.save_file(sd, str(bad))
    with pytest.raises(ToolError) as e:
        sam2_backend.Sam2Segmenter(checkpoint=str(bad), device="cpu").model
    msg = str(e.value)
    assert "missing keys [no_mem_embed]" in msg and "unexpected keys [extra.weight]" in msg and str(bad.resolve()) in msg


def test_config_from_a_yaml_file_and_unknown_config(checkpoint, tmp_path):
    yaml = tmp_path / "my_sam.yaml"
    shutil.copy(Path(sam2.__file__).parent / CONFIG, yaml)
    model = sam2_backend.load_model(str(checkpoint), config=str(yaml), device="cpu")
    assert type(model).__name__ == "SAM2VideoPredictor"
    # hydra's global state is back on sam2's package configs afterwards
    assert sam2_backend.load_model(str(checkpoint), config=CONFIG, device="cpu") is not model
    with pytest.raises(ToolError, match="neither a yaml file nor a sam2 package config"):
        sam2_backend.load_model(str(checkpoint), config="configs/sam9/none.yaml", device="cpu")


def test_sam2_not_installed(checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "sam2", None)  # find_spec -> None, import -> ImportError
    with pytest.raises(ToolError, match=r"pixelis_ros\[segment\]"):
        SegmentTool(backend="sam2", checkpoint=str(checkpoint))
