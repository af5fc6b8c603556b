"""temporal: localise *when* something happens in the frame buffer, as time spans.

Structured pixel predicates, each a per-frame boolean computed inside an optional region:

- ``change``: the region differs from the previous frame (an event happened);
- ``appear`` / ``disappear``: the region differs from / returns to how it looked at the start;
- ``colour``: a share of the region's pixels has the named colour (``value``: a name or r,g,b);
- ``text``: OCR of the region contains ``value`` as a whole token;
- ``motion_stop``: the region was moving and is now still.

Runs of true frames become spans ``[t_start, t_end]`` where ``t_end`` is when the run's last
frame stops being shown (the next frame's stamp). Pixel predicates work on small grey or colour
thumbnails cached on each frame, so a 300-frame scan costs tens of milliseconds; ``text`` runs
OCR per frame and is the slow one. A free-text embedding backend is future work (DESIGN §4.4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from pixelis_ros.boxes import int_box
from pixelis_ros.cota import is_blank
from pixelis_ros.frames import Frame
from pixelis_ros.image_codec import to_rgb8
from pixelis_ros.progress import progress as progress_bar
from pixelis_ros.tools.arguments import Box, arg
from pixelis_ros.tools.base import Detection, Tool, ToolContext, ToolError, ToolResult, register_tool
from pixelis_ros.tools.colour import colour_mask
from pixelis_ros.tools.zoom import crop_and_scale

Predicate = Literal["change", "appear", "disappear", "colour", "text", "motion_stop"]

THUMB_SIDE = 64


def thumbnail(frame: Frame, region, colour: bool) -> np.ndarray:
    """Region of ``frame`` shrunk to at most THUMB_SIDE per side, cached on the frame."""
    key = (region, colour)
    thumb = frame._thumbs.get(key)
    if thumb is None:
        img = frame.image
        if region is not None:
            x1, y1, x2, y2 = region
            img = img[y1:y2, x1:x2]
        # Subsample to about twice the thumbnail first (a free strided view), then area-average:
        # 4x cheaper than averaging the full frame, and still averages 4 samples per pixel.
        stride = max(1, max(img.shape[:2]) // (2 * THUMB_SIDE))
        img = to_rgb8(img[::stride, ::stride])
        scale = min(1.0, THUMB_SIDE / max(img.shape[:2]))
        size = (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale)))
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        thumb = small if colour else cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        frame._thumbs[key] = thumb
    return thumb


def runs(flags: list[bool]) -> list[tuple[int, int]]:
    """Inclusive (first, last) index pairs of the runs of True."""
    out, start = [], None
    for i, f in enumerate(flags + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i - 1))
            start = None
    return out


@dataclass(frozen=True)
class TemporalArgs:
    predicate: Predicate = arg(doc="what to look for: change, appear, disappear, colour, text or motion_stop")
    value: str | None = arg(None, "colour name or r,g,b for 'colour'; the string to find for 'text'")
    bbox_2d: Box | None = arg(None, "optional region [x1, y1, x2, y2] in frame pixels to watch")
    start: str = arg("frame:0", "first frame to scan: frame:<index> or frame:<seconds>s")
    end: str = arg("frame:-1", "last frame to scan: frame:<index> or frame:<seconds>s")


@register_tool
class TemporalTool(Tool):
    name = "temporal"
    description = "Find when something happens in the recent frames (change, appear, disappear, colour, text, motion_stop); returns time spans in seconds and keyframes."
    Args = TemporalArgs

    @classmethod
    def from_config(cls, config, tool):
        return cls(ocr=tool("ocr"))  # the text predicate reads with the OCR tool, when it is enabled

    def __init__(self, pixel_threshold: float = 20.0, change_fraction: float = 0.01, colour_fraction: float = 0.05,
                 max_keyframes: int = 3, ocr=None):
        # A region "changed" when more than change_fraction of its thumbnail pixels moved by more
        # than pixel_threshold grey levels: a mean difference would miss small objects moving.
        self.pixel_threshold = pixel_threshold
        self.change_fraction = change_fraction
        self.colour_fraction = colour_fraction
        self.max_keyframes = max_keyframes
        self._ocr = ocr  # an OCRTool; built on first use of the text predicate

    def run(self, args: TemporalArgs, ctx: ToolContext) -> ToolResult:
        i0, i1 = ctx.frame_index(args.start), ctx.frame_index(args.end)
        if i1 < i0:
            raise ToolError(f"temporal needs end at or after start: {args.start} is frame {i0}, {args.end} is frame {i1}")
        if args.predicate in ("colour", "text") and (not args.value or is_blank(args.value)):
            # A blank text value would match every frame: an error, not a silent "always".
            got = "" if not args.value else f" (got {len(args.value)} blank or zero-width characters)"
            raise ToolError(f"the '{args.predicate}' predicate needs a value{got}")
        region = int_box(ctx.check_box(args.bbox_2d, f"frame:{i0}")) if args.bbox_2d is not None else None
        frames = [ctx.frames[i] for i in range(i0, i1 + 1)]
        flags = self.evaluate(args, frames, region, ctx)
        spans_idx = runs(flags)
        spans = [(frames[a].stamp, ctx.frames.end_of(i0 + b)) for a, b in spans_idx]
        keys = [i0 + a for a, _ in spans_idx[: self.max_keyframes]]
        images = [crop_and_scale(to_rgb8(ctx.frames[k].image), (0, 0, *ctx.frames[k].size), 448, 1.0)[0] for k in keys]
        data = {"spans": [[round(a, 4), round(b, 4)] for a, b in spans], "predicate": args.predicate,
                "frames_scanned": len(frames), "keyframes": keys}
        text = ", ".join(f"{a:.2f}-{b:.2f} s" for a, b in spans) or f"'{args.predicate}' never held"
        origins = [(f"frame:{k}", (0.0, 0.0, float(ctx.frames[k].size[0]), float(ctx.frames[k].size[1]))) for k in keys]
        # The watched region is what the answer is about: it grounds the episode's action.
        dets = [Detection(tuple(float(v) for v in region), f"frame:{i1}", label="temporal")] if region is not None else []
        return ToolResult(data=data, text=text, images=images, image_origins=origins, spans=spans, detections=dets)

    def evaluate(self, args: TemporalArgs, frames: list[Frame], region, ctx: ToolContext) -> list[bool]:
        p = args.predicate
        if p == "text":
            return self._text_flags(frames, region, args.value or "", ctx)
        if p == "colour":
            return [colour_mask(thumbnail(f, region, True), args.value or "").mean() >= self.colour_fraction for f in frames]
        grey = [thumbnail(f, region, False) for f in frames]
        if p in ("change", "motion_stop"):
            moving = [False] + [self._differs(a, b) for a, b in zip(grey, grey[1:])]
            if p == "change":
                return moving
            started = np.cumsum(moving) > 0
            return [bool(s) and not m for s, m in zip(started, moving)]
        present = [self._differs(grey[0], g) for g in grey]
        if p == "appear":
            return present
        seen = np.cumsum(present) > 0
        return [bool(s) and not pr for s, pr in zip(seen, present)]

    def _differs(self, a: np.ndarray, b: np.ndarray) -> bool:
        return float((np.abs(b - a) > self.pixel_threshold).mean()) > self.change_fraction

    def _text_flags(self, frames: list[Frame], region, value: str, ctx: ToolContext) -> list[bool]:
        if self._ocr is None:
            from pixelis_ros.tools.ocr import OCRTool
            self._ocr = OCRTool()
        pattern = re.compile(r"(?<![0-9a-z])" + re.escape(value.strip().lower()) + r"(?![0-9a-z])")
        flags = []
        bar = progress_bar(frames, desc="temporal: reading frames", unit="frame", enabled=None if ctx.progress else False)
        for f in bar:
            ctx.check_time_left("temporal text scan")
            lines = self._ocr.read(to_rgb8(f.image), region)
            flags.append(bool(pattern.search(" ".join(t for t, _, _ in lines).lower())))
        return flags
