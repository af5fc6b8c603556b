"""Box geometry shared by the grammar, the tools and the renderer.

Boxes are ``(x1, y1, x2, y2)`` in absolute pixels of the image a call names (DESIGN §4.2).
The limits (28 px minimum side, aspect ratio at most 100) are the ones Qwen-VL peers enforce:
below them crops degrade or crash vision towers, so we reject early with a precise message.
"""

from __future__ import annotations

import math
from typing import Sequence

Box = tuple[float, float, float, float]

MIN_BOX_SIDE = 28
MAX_ASPECT_RATIO = 100.0


def fmt_box(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


def check_box(box: Sequence[float], width: int, height: int, name: str = "bbox_2d",
              min_side: float = MIN_BOX_SIDE) -> tuple[Box | None, str | None]:
    """Clamp ``box`` to a ``width`` x ``height`` image, or explain why it cannot be used.

    Returns ``(clamped_box, None)`` or ``(None, message)``. Partly outside boxes are clamped;
    boxes that are not finite, inverted, wholly outside, thinner than ``min_side`` after
    clamping or more elongated than ``MAX_ASPECT_RATIO`` are errors. ``min_side`` is
    ``MIN_BOX_SIDE`` for boxes that become crops shown to a model; boxes that only locate an
    object (track, segment) may be smaller.
    """
    if len(box) != 4:
        return None, f"{name} must have 4 numbers [x1, y1, x2, y2], got {len(box)}"
    if not all(math.isfinite(float(v)) for v in box):
        return None, f"{name} {list(box)} contains NaN or infinity"
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        return None, f"{name} {fmt_box(box)} is inverted or empty: need x1 < x2 and y1 < y2"
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return None, f"{name} {fmt_box(box)} lies outside the {width}x{height} image"
    cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2)
    w, h = cx2 - cx1, cy2 - cy1
    if min(w, h) < min_side:
        return None, (
            f"{name} {fmt_box(box)} is {w:g}x{h:g} px inside the {width}x{height} image; "
            f"the minimum side is {min_side:g} px (enlarge the box)"
        )
    if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
        return None, f"{name} {fmt_box(box)} has aspect ratio {max(w, h) / min(w, h):.1f} > {MAX_ASPECT_RATIO:g}"
    return (cx1, cy1, cx2, cy2), None


def check_point(point: Sequence[float], width: int, height: int, name: str = "point_2d") -> str | None:
    """Return an error message when ``point`` is not a finite pixel inside the image."""
    if len(point) != 2 or not all(math.isfinite(float(v)) for v in point):
        return f"{name} must be 2 finite numbers [x, y], got {list(point)}"
    x, y = float(point[0]), float(point[1])
    if not (0 <= x < width and 0 <= y < height):
        return f"{name} [{x:g}, {y:g}] lies outside the {width}x{height} image"
    return None


def int_box(box: Sequence[float]) -> tuple[int, int, int, int]:
    """Integer pixel box covering ``box`` (floor of the start, ceil of the end)."""
    return int(math.floor(box[0])), int(math.floor(box[1])), int(math.ceil(box[2])), int(math.ceil(box[3]))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def round_box(box: Sequence[float], digits: int = 1) -> list[float]:
    return [round(float(v), digits) for v in box]
