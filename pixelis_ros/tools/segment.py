"""segment: a mask from a box or a point, summarised as box, area, centroid and an overlay.

Backends register in ``SEGMENT_BACKENDS``. The default is OpenCV GrabCut (no weights, ~IoU 0.97
from a tight box, DESIGN §6); ``sam2`` (see ``sam2_backend``) is used when a checkpoint is
configured. A backend is a callable ``(rgb, box | None, point | None) -> HxW bool mask``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pixelis_ros.boxes import int_box, MIN_BOX_SIDE
from pixelis_ros.cota import clip
from pixelis_ros.tools.arguments import Box, Point, arg
from pixelis_ros.tools.colour import dominant_colour
from pixelis_ros.tools.base import MIN_OBJECT_SIDE, MaskSummary, Detection, Tool, ToolContext, ToolError, ToolResult, build_backend, make_registry, register_tool

SEGMENT_BACKENDS, register_segment_backend = make_registry("segment")

# A point prompt becomes a box this many times the minimum box side around the point: GrabCut
# needs a rectangle, and an object under the point is usually at least this large.
POINT_BOX_SIDE = 4 * MIN_BOX_SIDE


@register_segment_backend("grabcut")
class GrabCutSegmenter:
    """OpenCV GrabCut seeded by a rectangle (a point is turned into a box around it)."""

    def __init__(self, iterations: int = 3, margin: float = 0.15):
        self.iterations = iterations
        self.margin = margin  # context around the box GrabCut sees as background

    def __call__(self, rgb: np.ndarray, box, point) -> np.ndarray:
        h, w = rgb.shape[:2]
        if box is None:
            x, y = point
            box = (x - POINT_BOX_SIDE / 2, y - POINT_BOX_SIDE / 2, x + POINT_BOX_SIDE / 2, y + POINT_BOX_SIDE / 2)
        x1, y1, x2, y2 = int_box(box)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if (x1, y1, x2, y2) == (0, 0, w, h):
            # GrabCut learns the background from pixels outside the rectangle and asserts when
            # there are none. A box from a point is ours to shrink (keeping the point inside);
            # a box the caller drew around the whole image is a call to fix.
            if point is None:
                raise ToolError(f"the box covers the whole {w}x{h} image, which leaves GrabCut no background to "
                                "compare with; draw the box around the object only")
            px, py = int(point[0]), int(point[1])
            mx, my = max(1, w // 8), max(1, h // 8)
            x1, y1 = min(mx, px), min(my, py)
            x2, y2 = max(w - mx, px + 1), max(h - my, py + 1)
            if (x1, y1, x2, y2) == (0, 0, w, h):
                raise ToolError(f"the {w}x{h} image is too small to segment: GrabCut needs background around the object")
        # Work on a crop around the box: GrabCut's cost grows with the pixels it models.
        mx, my = int((x2 - x1) * self.margin) + 2, int((y2 - y1) * self.margin) + 2
        cx1, cy1, cx2, cy2 = max(0, x1 - mx), max(0, y1 - my), min(w, x2 + mx), min(h, y2 + my)
        crop = np.ascontiguousarray(rgb[cy1:cy2, cx1:cx2, ::-1])
        mask = np.zeros(crop.shape[:2], np.uint8)
        rect = (x1 - cx1, y1 - cy1, x2 - x1, y2 - y1)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # GrabCut's k-means draws from OpenCV's per-thread RNG: seed it so the same call gives the
        # same mask whatever ran before (replayed traces, exports split across processes).
        cv2.setRNGSeed(0)
        try:
            cv2.grabCut(crop, mask, rect, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_RECT)
        except cv2.error as e:  # OpenCV's assertions are not messages for the model
            raise ToolError(f"GrabCut could not segment the box {list(rect)} of the {w}x{h} image "
                            f"({clip((str(e).strip().splitlines() or ['no detail'])[-1], 120)})") from None
        if point is not None:
            mask[int(point[1]) - cy1, int(point[0]) - cx1] = cv2.GC_FGD
        full = np.zeros((h, w), bool)
        full[cy1:cy2, cx1:cx2] = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        return full


def summarise_mask(mask: np.ndarray, ref: str) -> MaskSummary:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ToolError(f"the segmenter found no object in the prompt on '{ref}'; try a larger box or another point")
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    return MaskSummary(image=ref, mask=mask, bbox_2d=box, area=int(len(xs)), centroid=(float(xs.mean()), float(ys.mean())))


def overlay(rgb: np.ndarray, mask: np.ndarray, box, color=(255, 0, 255)) -> np.ndarray:
    """The crop around the mask, with the mask tinted, as the model's view of the result."""
    x1, y1, x2, y2 = int_box(box)
    out = rgb[y1:y2, x1:x2].astype(np.float32)
    m = mask[y1:y2, x1:x2]
    out[m] = 0.5 * out[m] + 0.5 * np.asarray(color, np.float32)
    return out.astype(np.uint8)


@dataclass(frozen=True)
class SegmentArgs:
    image: str = arg("frame:-1", "image to segment: frame:<index>, frame:<seconds>s or obs:<k>")
    bbox_2d: Box | None = arg(None, "box around the object [x1, y1, x2, y2] in pixels of the image")
    point_2d: Point | None = arg(None, "a point on the object [x, y] in pixels of the image")


@register_tool
class SegmentTool(Tool):
    name = "segment"
    description = ("Segment the object in a box or under a point; returns its mask's box, area (px), centroid, colour, "
                   "distance from the camera (depth_m, when the frame has depth) and an overlay crop.")
    Args = SegmentArgs

    @classmethod
    def from_config(cls, config, tool):
        return cls(backend=config.segment_backend, **config.segment_options)

    def __init__(self, backend: str = "grabcut", **backend_options):
        self.backend_name = backend
        self.segmenter = build_backend(SEGMENT_BACKENDS, backend, backend_options)

    def run(self, args: SegmentArgs, ctx: ToolContext) -> ToolResult:
        if args.bbox_2d is None and args.point_2d is None:
            raise ToolError("segment needs bbox_2d or point_2d")
        box = ctx.check_box(args.bbox_2d, args.image, min_side=MIN_OBJECT_SIDE) if args.bbox_2d is not None else None
        point = ctx.check_point(args.point_2d, args.image) if args.point_2d is not None else None
        rgb = ctx.image(args.image)
        summary = summarise_mask(self.segmenter(rgb, box, point), args.image)
        data = summary.to_json() | {"colour": dominant_colour(rgb[summary.mask])}
        depth = ctx.depth(args.image)
        if depth is not None and depth.shape == summary.mask.shape:
            values = depth[summary.mask]
            values = values[np.isfinite(values) & (values > 0)]
            if len(values):
                data["depth_m"] = round(float(np.median(values)), 3)  # robust to mask edges on the background
        return ToolResult(data=data, text=f"object area {summary.area} px", images=[overlay(rgb, summary.mask, summary.bbox_2d)],
                          image_origins=[(args.image, summary.bbox_2d)],
                          detections=[Detection(summary.bbox_2d, args.image, label="segment")], mask=summary)
