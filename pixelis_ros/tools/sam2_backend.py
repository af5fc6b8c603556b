"""SAM 2 backends for ``segment`` and ``track``, registered as ``sam2`` (DESIGN §4.4).

The defaults (GrabCut, CSRT) need no weights; with a SAM 2 checkpoint these give object-level
masks and a memory-based tracker. Both backends share one loaded model per (checkpoint, config,
device), built with sam2's own hydra config and ``build_sam2_video_predictor`` — a
``SAM2VideoPredictor`` is a ``SAM2Base``, so ``SAM2ImagePredictor`` can wrap it as well.

Deviations from upstream sam2:
- weights load only from a local ``.safetensors`` file (no pickle, no hub download, §4.4).
  Convert an official ``.pt`` once: ``sd = torch.load(pt, map_location="cpu",
  weights_only=True)["model"]; safetensors.torch.save_file(sd, "sam2.1_hiera_tiny.safetensors")``.
- the video predictor in sam2 1.1.0 reads frames only from a folder of JPEGs, so ``track``
  writes the frames (quality 95) to a temporary folder: slightly lossy, and costs disk I/O.
- without sam2's CUDA extension the hole-filling post-process is switched off rather than
  failing (and warning) on every frame.
Tests build SAM 2.1 tiny with random weights: they exercise the plumbing, not mask quality.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from pixelis_ros.tools.base import ToolError
from pixelis_ros.tools.segment import register_segment_backend
from pixelis_ros.tools.track import register_track_backend

DEFAULT_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
INSTALL_HINT = ("install the segment extra: pip install 'pixelis_ros[segment]' (sam2 built without its CUDA "
                "extension: SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0)")


def check_checkpoint(checkpoint: str) -> Path:
    """The checkpoint as a path, or a ToolError saying what to change."""
    path = Path(checkpoint).expanduser()
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        raise ToolError(
            f"SAM 2 checkpoint '{path}' is a pickle file; only .safetensors weights are loaded (pickle can run code). "
            "Convert it once: sd = torch.load(path, map_location='cpu', weights_only=True)['model']; "
            "safetensors.torch.save_file(sd, 'model.safetensors')")
    if path.suffix != ".safetensors":
        raise ToolError(f"SAM 2 checkpoint '{path}' must be a .safetensors file")
    if not path.is_file():
        raise ToolError(f"SAM 2 checkpoint '{path}' does not exist")
    if importlib.util.find_spec("sam2") is None:
        raise ToolError(f"the sam2 backend needs the sam2 package; {INSTALL_HINT}")
    return path.resolve()


def resolve_device(device: str) -> str:
    import torch
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_model(checkpoint: str, config: str = DEFAULT_CONFIG, device: str = "auto") -> Any:
    """A ``SAM2VideoPredictor`` built from ``config`` with the safetensors weights in ``checkpoint``."""
    path = check_checkpoint(checkpoint)
    dev = resolve_device(device)
    return _load_cached(str(path), path.stat().st_mtime_ns, config, dev)


@functools.lru_cache(maxsize=2)  # segment and track with the same checkpoint share one model
def _load_cached(path: str, mtime_ns: int, config: str, device: str) -> Any:
    try:
        import safetensors.torch
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError as e:
        raise ToolError(f"the sam2 backend cannot import {e.name or e}; {INSTALL_HINT}") from e
    model = _with_config(config, lambda name: build_sam2_video_predictor(name, ckpt_path=None, device=device))
    try:
        missing, unexpected = safetensors.torch.load_model(model, path, strict=False, device="cpu")
    except RuntimeError as e:  # shape mismatches: a checkpoint of another model size
        raise ToolError(f"SAM 2 checkpoint '{path}' does not fit config '{config}': {e}") from None
    if missing or unexpected:
        raise ToolError(f"SAM 2 checkpoint '{path}' does not fit config '{config}': "
                        f"missing keys {_names(missing)}; unexpected keys {_names(unexpected)}")
    if importlib.util.find_spec("sam2._C") is None:
        model.fill_hole_area = 0  # the hole filling needs the CUDA extension; skip it quietly
    return model


def _with_config(config: str, build: Callable[[str], Any]) -> Any:
    """Build from a sam2 package config name, or from a yaml file anywhere on disk."""
    from hydra.errors import MissingConfigException

    file = Path(config).expanduser()
    if not file.is_file():
        try:
            return build(config)
        except MissingConfigException:
            raise ToolError(f"SAM 2 config '{config}' is neither a yaml file nor a sam2 package config "
                            f"(e.g. {DEFAULT_CONFIG})") from None
    # sam2 initialises hydra's global state on import with its own package as the config
    # root; compose a file elsewhere by rooting hydra at its folder for the build, then restore.
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    saved = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(file.resolve().parent), version_base="1.2"):
            return build(file.name)
    finally:
        GlobalHydra.instance().clear()
        if saved is not None:
            GlobalHydra.instance().initialize(saved)


def _names(keys) -> str:
    keys = sorted(keys)
    return ("[" + ", ".join(keys[:5]) + (f", ... {len(keys) - 5} more" if len(keys) > 5 else "") + "]") if keys else "none"


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """The box around a bool mask (exclusive right/bottom, as ``segment`` reports), None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


class _Sam2Backend:
    def __init__(self, checkpoint: str, config: str = DEFAULT_CONFIG, device: str = "auto", mask_threshold: float = 0.0):
        check_checkpoint(checkpoint)  # fail at configuration time, not on the first call
        self.checkpoint, self.config, self.device = checkpoint, config, device
        self.mask_threshold = float(mask_threshold)
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_model(self.checkpoint, self.config, self.device)
        return self._model


@register_segment_backend("sam2")
class Sam2Segmenter(_Sam2Backend):
    """SAM2ImagePredictor from a box and/or a positive point; one mask (no multimask output)."""

    _predictor: Any = None

    def __call__(self, rgb: np.ndarray, box, point) -> np.ndarray:
        import torch
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        if self._predictor is None:
            self._predictor = SAM2ImagePredictor(self.model, mask_threshold=self.mask_threshold)
        with torch.inference_mode():
            self._predictor.set_image(np.ascontiguousarray(rgb))
            masks, _, _ = self._predictor.predict(
                point_coords=None if point is None else np.asarray([point], np.float32),
                point_labels=None if point is None else np.ones(1, np.int32),
                box=None if box is None else np.asarray(box, np.float32),
                multimask_output=False)
        self._predictor.reset_predictor()  # do not hold the image embedding between calls
        return masks[0] > 0.5  # already thresholded at mask_threshold; 0/1 floats


@register_track_backend("sam2")
class Sam2Tracker(_Sam2Backend):
    """SAM2VideoPredictor: a box prompt on the first frame, propagated forward one frame at a time."""

    def __call__(self, frames: list[np.ndarray], box, should_stop: Callable[[], bool]) -> list:
        import torch

        boxes: list = [tuple(float(v) for v in box)]
        if len(frames) < 2:
            return boxes
        model = self.model
        on_gpu = str(model.device).startswith("cuda")
        with tempfile.TemporaryDirectory(prefix="pixelis_sam2_") as folder, torch.inference_mode():
            # load_video_frames sorts by int(stem): 00000.jpg, 00001.jpg, ...
            for i, rgb in enumerate(frames):
                cv2.imwrite(os.path.join(folder, f"{i:05d}.jpg"), np.ascontiguousarray(rgb[:, :, ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
            # On a GPU keep the resized frames (12 MB each at 1024 px) in host memory; on the CPU
            # offloading is a no-op copy.
            state = model.init_state(video_path=folder, offload_video_to_cpu=on_gpu, offload_state_to_cpu=False)
            model.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.asarray(box, np.float32))
            steps = model.propagate_in_video(state)  # a generator: each next() runs one frame
            try:
                next(steps)  # frame 0 is the prompt frame; it is reported as the given box
                for _ in frames[1:]:
                    if should_stop():
                        break
                    _, _, logits = next(steps)
                    boxes.append(mask_box((logits[0, 0] > self.mask_threshold).cpu().numpy()))
            finally:
                steps.close()
        return boxes
