"""The auxiliary heads at inference without torch, and the verdict every backend builds from them.

``heads.GroundingHeads`` (torch) trains the heads; a robot running the ONNX/TensorRT backend only
needs their forward pass for one query: a few matrix products, here in numpy, reading the same
``heads.safetensors`` / ``heads_config.json``. The verdict (box and point in internal pixels, the
pointer's confidence, agreement with the generated box) and the refine rule live here too, so the
torch and ONNX backends report the same thing the same way.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixelis_ros.boxes import MIN_BOX_SIDE, iou
from pixelis_ros.policy.model_folder import ModelFolderError

HEADS_FILE = "heads.safetensors"
HEADS_CONFIG = "heads_config.json"
MODES = ("off", "check", "refine")
"""Heads at inference: off, check (flag calls whose box disagrees), refine (execute the heads' box)."""


@dataclass(frozen=True)
class HeadsConfig:
    """Sizes of the auxiliary heads."""

    hidden_size: int
    """Backbone hidden size (``text_config.hidden_size``); must match the model they run on."""
    proj_dim: int = 128
    """Width of the pointer's query/key projections and of the per-cell features."""
    mlp_dim: int = 256
    """Hidden width of the box/point/time MLPs."""
    neighbourhood: int = 3
    """Side of the cell neighbourhood the box and point heads read (odd)."""


_erf = np.vectorize(math.erf, otypes=[np.float64])  # numpy has no erf; torch's GELU is the exact (erf) one


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class NumpyHeads:
    """Inference forward of ``GroundingHeads`` for one query (pointer, box, point)."""

    def __init__(self, config: HeadsConfig, weights: dict[str, np.ndarray]):
        self.config = config
        self.w = {k: v.astype(np.float32) for k, v in weights.items()}

    def _linear(self, name: str, x: np.ndarray) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]

    def _mlp(self, name: str, x: np.ndarray) -> np.ndarray:
        h = self._linear(f"{name}.0", x).astype(np.float64)
        h = (0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))).astype(np.float32)
        return self._linear(f"{name}.2", h)

    def _norm(self, x: np.ndarray) -> np.ndarray:
        return _layer_norm(x, self.w["norm.weight"], self.w["norm.bias"])

    def __call__(self, query: np.ndarray, keys: np.ndarray, rows: int, cols: int) -> dict:
        """``query [H]``, ``keys [rows * cols, H]`` (row-major cells) -> pointer_logits, chosen, box, point
        (box and point normalised to the image, as ``GroundingHeads.forward``)."""
        query, keys = query.astype(np.float32), keys.astype(np.float32)
        q = self._linear("query", self._norm(query))
        k = self._linear("key", self._norm(keys))
        logits = k @ q / np.float32(self.config.proj_dim ** 0.5)
        chosen = int(np.argmax(logits))
        cells = self._linear("cell", self._norm(keys))
        r, n = self.config.neighbourhood // 2, keys.shape[0]
        cy, cx = chosen // cols, chosen % cols
        feats, flags = [], []
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                y, x = cy + dy, cx + dx
                inside = 0 <= y < rows and 0 <= x < cols
                feats.append(cells[min(y * cols + x, n - 1)] if inside else np.zeros_like(cells[0]))
                flags.append(np.float32(inside))
        feat = np.concatenate([q, *feats, np.array(flags, np.float32)])
        ccx, ccy = cx + 0.5, cy + 0.5
        b = self._mlp("box", feat)
        bx, by = (ccx + b[0]) / cols, (ccy + b[1]) / rows
        bw, bh = math.exp(float(np.clip(b[2], -6, 6))) / cols, math.exp(float(np.clip(b[3], -6, 6))) / rows
        p = np.tanh(self._mlp("point", feat))
        half = self.config.neighbourhood / 2
        return {"pointer_logits": logits, "chosen": chosen,
                "box": np.array([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], np.float32),
                "point": np.array([(ccx + p[0] * half) / cols, (ccy + p[1] * half) / rows], np.float32)}


def read_heads(folder: str | Path, hidden_size: int | None = None) -> tuple["HeadsConfig", dict[str, np.ndarray]]:
    """The config and weights saved by ``heads.save_heads``, checked: a missing or unreadable file
    and heads trained for another hidden size raise ModelFolderError naming the file and the fix."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder = Path(folder)
    weights, config_path = folder / HEADS_FILE, folder / HEADS_CONFIG
    for path in (weights, config_path):
        if not path.is_file():
            raise ModelFolderError(f"{path} is missing; train heads (SFT with the auxiliary loss) or set heads='off'")
    try:
        config = HeadsConfig(**json.loads(config_path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as e:
        raise ModelFolderError(f"{config_path} is not a heads config ({e}); re-save the heads") from None
    if hidden_size is not None and config.hidden_size != hidden_size:
        raise ModelFolderError(f"{weights} was trained for hidden size {config.hidden_size} but the model has "
                               f"{hidden_size}; use heads trained on this backbone or set heads='off'")
    try:
        return config, load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ModelFolderError(f"{weights} is not a readable safetensors file ({e})") from None


def load_numpy_heads(folder: str | Path, hidden_size: int | None = None) -> NumpyHeads:
    """Heads saved by ``heads.save_heads``, for numpy inference; errors name the file and the fix."""
    config, state = read_heads(folder, hidden_size)
    weights, config_path = Path(folder) / HEADS_FILE, Path(folder) / HEADS_CONFIG
    h, p, k = config.hidden_size, config.proj_dim, config.neighbourhood
    feat = p + k * k * (p + 1)
    expected = {"norm.weight": (h,), "query.weight": (p, h), "key.weight": (p, h), "cell.weight": (p, h),
                "box.0.weight": (config.mlp_dim, feat), "box.2.weight": (4, config.mlp_dim),
                "point.0.weight": (config.mlp_dim, feat), "point.2.weight": (2, config.mlp_dim)}
    for name, shape in expected.items():
        if name not in state or tuple(state[name].shape) != shape:
            raise ModelFolderError(f"{weights} does not match {config_path} ({name}: expected {shape}); re-save the heads")
    return NumpyHeads(config, state)


def call_token_position(tokenizer, token_ids: list[int]) -> int | None:
    """Index in the generation of the token that completes ``<tool_call>`` (the pointer's query)."""
    for i in range(len(token_ids)):
        if "<tool_call>" in tokenizer.decode(token_ids[max(0, i - 12):i + 1], skip_special_tokens=False):
            return i
    return None


def grown_box(box: list[float], width: float, height: float, side: float = MIN_BOX_SIDE) -> list[float]:
    """``box`` grown about its centre to at least ``side`` px a side (the smallest crop a tool
    accepts) and kept inside the image. The regressor is trained on boxes that side or larger but
    can undershoot by a pixel, and a refused call derails a small policy's episode."""
    out = []
    for lo, hi, limit in ((box[0], box[2], width), (box[1], box[3], height)):
        need = min(side + 0.2, limit) - (hi - lo)  # + 0.2: rounding to 0.1 px must not undercut it
        if need > 0:
            lo, hi = lo - need / 2, hi + need / 2
            shift = max(0.0, -lo) - max(0.0, hi - limit)
            lo, hi = lo + shift, hi + shift
        out.append((round(lo, 1), round(hi, 1)))
    return [out[0][0], out[1][0], out[0][1], out[1][1]]


def heads_verdict(pred: dict, mode: str, ref: str, width: float, height: float, arguments: dict,
                  min_iou: float) -> dict:
    """The heads' verdict on a call: box/point in internal pixels of image ``ref`` (``width`` x
    ``height``), the chosen cell and the pointer's confidence, and (with a generated box) its IoU
    with the heads' box and whether they agree (IoU >= ``min_iou``)."""
    logits = np.asarray(pred["pointer_logits"], np.float64)
    probs = np.exp(logits - logits.max())
    box = grown_box([float(v) * s for v, s in zip(np.asarray(pred["box"]).tolist(), (width, height) * 2)], width, height)
    point = [round(float(v) * s, 1) for v, s in zip(np.asarray(pred["point"]).tolist(), (width, height))]
    verdict = {"mode": mode, "image": ref, "cell": int(pred["chosen"]), "box": box, "point": point,
               "score": round(float(probs.max() / probs.sum()), 4)}
    given = arguments.get("bbox_2d")
    if isinstance(given, list) and len(given) == 4 and all(isinstance(v, (int, float)) for v in given):
        verdict["iou"] = round(iou(given, box), 4)
        verdict["agree"] = verdict["iou"] >= min_iou
    return verdict


def refine_arguments(arguments: dict, verdict: dict) -> dict:
    """Refine mode: the executed call takes the heads' box (and point); marks the verdict refined."""
    if not verdict.get("box"):
        return arguments
    arguments = dict(arguments, bbox_2d=verdict["box"]) if "bbox_2d" in arguments else arguments
    if "point_2d" in arguments and verdict.get("point"):
        arguments = dict(arguments, point_2d=verdict["point"])
    verdict["refined"] = True
    return arguments
