"""zoom: crop a region and upscale it, so small far details become legible to the model.

The output's longer side goes to ``target_side`` (upscaling at most ``max_upscale`` times, and
downscaling crops that are larger, so one zoom never blows the model's pixel budget). On a robot
with a PTZ camera the node may also act on the call (narrow the field of view); the tool itself
is pure pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pixelis_ros.boxes import int_box, round_box
from pixelis_ros.tools.arguments import Box, arg
from pixelis_ros.tools.base import Detection, Tool, ToolContext, ToolResult, register_tool


@dataclass(frozen=True)
class ZoomArgs:
    bbox_2d: Box = arg(doc="region to zoom into [x1, y1, x2, y2] in pixels of the image")
    image: str = arg("frame:-1", "image to zoom: frame:<index>, frame:<seconds>s or obs:<k>")


def crop_and_scale(rgb: np.ndarray, box, target_side: int, max_upscale: float) -> tuple[np.ndarray, float]:
    x1, y1, x2, y2 = int_box(box)
    crop = rgb[y1:y2, x1:x2]
    scale = min(max_upscale, target_side / max(crop.shape[:2]))
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    # Cubic for enlarging keeps strokes sharp for OCR; area averaging for shrinking avoids aliasing.
    interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    return cv2.resize(crop, size, interpolation=interp), scale


@register_tool
class ZoomTool(Tool):
    name = "zoom"
    description = "Zoom into a region of an image: crop it and enlarge it; returns the zoomed image as a new observation."
    Args = ZoomArgs

    @classmethod
    def from_config(cls, config, tool):
        return cls(target_side=config.zoom_target_side, max_upscale=config.zoom_max_upscale)

    def __init__(self, target_side: int = 448, max_upscale: float = 4.0):
        self.target_side = target_side
        self.max_upscale = max_upscale

    def run(self, args: ZoomArgs, ctx: ToolContext) -> ToolResult:
        box = ctx.check_box(args.bbox_2d, args.image)
        out, scale = crop_and_scale(ctx.image(args.image), box, self.target_side, self.max_upscale)
        data = {"bbox_2d": round_box(box), "size": [int(out.shape[1]), int(out.shape[0])], "scale": round(scale, 3)}
        return ToolResult(data=data, text=f"zoomed {out.shape[1]}x{out.shape[0]} (x{scale:.2f})", images=[out],
                          image_origins=[(args.image, box)],
                          detections=[Detection(box, args.image, label="zoom")])
