"""Colour names for pixels: one definition shared by the ``temporal`` colour predicate and the
colour that ``segment`` reports for a mask, so "red" means the same everywhere.

Hue ranges are in OpenCV's 0..180 scale with saturation/value floors, so shading changes
brightness without changing the name; white/black/gray are told apart by value alone.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from pixelis_ros.cota import quote
from pixelis_ros.tools.base import ToolError

HUES: dict[str, list[tuple[int, int]]] = {
    "red": [(0, 8), (170, 180)], "orange": [(9, 20)], "yellow": [(21, 34)], "green": [(35, 85)],
    "cyan": [(86, 100)], "blue": [(101, 130)], "purple": [(131, 150)], "magenta": [(151, 169)], "pink": [(151, 169)],
}
ACHROMATIC = ("white", "black", "gray", "grey")
NAMES = sorted(set(HUES) | set(ACHROMATIC))


def colour_mask(rgb: np.ndarray, value: str) -> np.ndarray:
    """Pixels of ``rgb`` (HxWx3 or Nx1x3) that have colour ``value``: a name or ``r,g,b``."""
    name = value.strip().lower()
    if re.fullmatch(r"\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}", name):
        target = np.array([int(v) for v in name.split(",")], np.float32)
        return np.linalg.norm(rgb.astype(np.float32) - target, axis=-1) < 60
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    if name == "white":
        return (s < 40) & (v > 170)
    if name == "black":
        return v < 50
    if name in ("gray", "grey"):
        return (s < 40) & (v >= 50) & (v <= 170)
    if name not in HUES:
        raise ToolError(f"unknown colour {quote(value)}; use r,g,b or one of {NAMES}")
    hue = np.zeros(h.shape, bool)
    for lo, hi in HUES[name]:
        hue |= (h >= lo) & (h <= hi)
    return hue & (s >= 80) & (v >= 60)


def dominant_colour(pixels: np.ndarray) -> str | None:
    """The colour name most of ``pixels`` (Nx3 RGB uint8) have, or None for no pixels."""
    if len(pixels) == 0:
        return None
    column = np.ascontiguousarray(pixels.reshape(-1, 1, 3))
    names = [n for n in NAMES if n not in ("pink", "grey")]  # aliases of magenta and gray
    counts = {n: int(colour_mask(column, n).sum()) for n in names}
    return max(counts, key=counts.get)
