"""track: follow an object from a box through the frame buffer between two times.

Backends register in ``TRACK_BACKENDS`` as callables
``(frames_rgb: list[HxWx3], box, should_stop) -> list[box | None]`` (``None`` = lost in that
frame). Defaults are OpenCV contrib's CSRT (accurate, ~25 ms/frame at 640x480), KCF (fast, no
scale change) and MIL; ``sam2`` (see ``sam2_backend``) runs the SAM 2 video predictor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from pixelis_ros.boxes import int_box, round_box
from pixelis_ros.tools.arguments import Box, arg
from pixelis_ros.tools.base import MIN_OBJECT_SIDE, Detection, Tool, ToolContext, ToolError, ToolResult, build_backend, make_registry, register_tool

TRACK_BACKENDS, register_track_backend = make_registry("track")


class OpenCVTracker:
    """One of OpenCV's single-object trackers, fed BGR frames as OpenCV expects.

    ``min_side``: the smallest box the tracker can start from. MIL's sampler never returns on a
    box 4 px wide (measured: init spins forever, in C++, holding the node's worker), so each
    tracker states its own floor and smaller boxes are refused before OpenCV sees them."""

    def __init__(self, name: str, create: Callable[[], object], min_side: int = MIN_OBJECT_SIDE):
        self.name, self.create, self.min_side = name, create, min_side

    def __call__(self, frames: list[np.ndarray], box, should_stop: Callable[[], bool]) -> list:
        x1, y1, x2, y2 = int_box(box)
        if min(x2 - x1, y2 - y1) < self.min_side:
            raise ToolError(f"the {self.name} tracker needs a box at least {self.min_side} px on each side; "
                            f"this one is {x2 - x1}x{y2 - y1} px")
        tracker = self.create()
        try:
            tracker.init(np.ascontiguousarray(frames[0][:, :, ::-1]), (x1, y1, x2 - x1, y2 - y1))
        except cv2.error as e:
            raise ToolError(f"the {self.name} tracker cannot start from box {[x1, y1, x2, y2]} on a "
                            f"{frames[0].shape[1]}x{frames[0].shape[0]} frame ({_cv_reason(e)})") from None
        boxes: list = [tuple(float(v) for v in box)]
        for k, rgb in enumerate(frames[1:], 1):
            if should_stop():
                break
            try:
                ok, (x, y, w, h) = tracker.update(np.ascontiguousarray(rgb[:, :, ::-1]))
            except cv2.error as e:  # e.g. the camera changed resolution mid-clip
                raise ToolError(f"the {self.name} tracker failed on frame {k} of the clip "
                                f"({rgb.shape[1]}x{rgb.shape[0]}; {_cv_reason(e)})") from None
            boxes.append((float(x), float(y), float(x + w), float(y + h)) if ok and w > 0 and h > 0 else None)
        return boxes


def _cv_reason(error: cv2.error) -> str:
    """OpenCV's failed condition without its source path ("OpenCV: Assertion failed: ...")."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    m = re.search(r"\(-?\d+:([^)]+)\)\s*(.*?)(?: in function .*)?$", line)
    return ("OpenCV: " + (f"{m.group(1)}: {m.group(2)}" if m else line))[:160]


register_track_backend("csrt")(lambda: OpenCVTracker("csrt", cv2.TrackerCSRT.create))
register_track_backend("kcf")(lambda: OpenCVTracker("kcf", cv2.TrackerKCF.create))
register_track_backend("mil")(lambda: OpenCVTracker("mil", cv2.TrackerMIL.create, min_side=6))


@dataclass(frozen=True)
class TrackArgs:
    bbox_2d: Box = arg(doc="box of the object [x1, y1, x2, y2] in pixels of the start frame")
    start: str = arg("frame:0", "frame where the box is given: frame:<index> or frame:<seconds>s")
    end: str = arg("frame:-1", "last frame to track to: frame:<index> or frame:<seconds>s")


@register_tool
class TrackTool(Tool):
    name = "track"
    description = ("Track an object from a box in the start frame to the end frame; returns its net motion (horizontal "
                   "and vertical direction, pixels moved), first and last boxes and keyframe crops.")
    Args = TrackArgs

    @classmethod
    def from_config(cls, config, tool):
        return cls(backend=config.track_backend, **config.track_options)

    def __init__(self, backend: str = "csrt", keyframes: int = 3, **backend_options):
        self.backend_name = backend
        self.keyframes = keyframes
        self.tracker = build_backend(TRACK_BACKENDS, backend, backend_options)

    def run(self, args: TrackArgs, ctx: ToolContext) -> ToolResult:
        i0, i1 = ctx.frame_index(args.start), ctx.frame_index(args.end)
        if i1 <= i0:
            raise ToolError(f"track needs end after start: {args.start} is frame {i0}, {args.end} is frame {i1}")
        box = ctx.check_box(args.bbox_2d, f"frame:{i0}", min_side=MIN_OBJECT_SIDE)
        frames = [ctx.image(f"frame:{i}") for i in range(i0, i1 + 1)]
        boxes = self.tracker(frames, box, lambda: _past(ctx))
        stopped_early = len(boxes) < len(frames)
        boxes += [None] * (len(frames) - len(boxes))
        times = [ctx.frames[i].stamp for i in range(i0, i1 + 1)]
        status = _status(boxes)
        found = [k for k, b in enumerate(boxes) if b is not None]
        picks = sorted({found[round(j * (len(found) - 1) / max(1, self.keyframes - 1))] for j in range(self.keyframes)}) if found else []
        crops = [_crop(frames[k], boxes[k]) for k in picks]
        data = {
            "boxes": [round_box(b) if b is not None else None for b in boxes],
            "times": [round(t, 4) for t in times],
            "status": status,
            "start_frame": i0,
            "end_frame": i1,
            "lost_frames": sum(b is None for b in boxes),
            "keyframes": [i0 + k for k in picks],
        }
        data |= motion(boxes[found[0]], boxes[found[-1]]) if found else {}
        if stopped_early:
            data["stopped_early"] = "time budget reached; later frames were not tracked"
        last = next((k for k in reversed(found)), None)
        text = f"tracked {len(found)}/{len(boxes)} frames" + (f", last seen at {times[last]:.2f} s" if last is not None else "")
        dets = [Detection(b, f"frame:{i0 + k}", label="track") for k, b in enumerate(boxes) if b is not None]
        origins = [(f"frame:{i0 + k}", boxes[k]) for k in picks]
        return ToolResult(data=data, text=text, images=crops, image_origins=origins, detections=dets, model_keys=MODEL_KEYS)


# What the model reads: the net motion decides direction questions in a few tokens; the
# per-frame boxes (~600 tokens for a 20-frame clip) stay in the data and the trace.
MODEL_KEYS = ("horizontal", "vertical", "moved_px", "first_box", "last_box", "lost_frames", "keyframes", "stopped_early",
              "over_budget")


def motion(first, last) -> dict:
    """Net motion of the box centre from its first to its last tracked position (image y grows down)."""
    dx = (last[0] + last[2] - first[0] - first[2]) / 2
    dy = (last[1] + last[3] - first[1] - first[3]) / 2
    return {"horizontal": "left" if dx < 0 else "right", "vertical": "up" if dy < 0 else "down",
            "moved_px": [round(dx, 1), round(dy, 1)], "first_box": round_box(first), "last_box": round_box(last)}


def _past(ctx: ToolContext) -> bool:
    try:
        ctx.check_time_left("track")
    except ToolError:
        return True
    return False


def _status(boxes: list) -> list[str]:
    """Per-frame "tracked" / "lost" / "found" (re-acquired after being lost)."""
    out, lost = [], False
    for b in boxes:
        if b is None:
            out.append("lost")
            lost = True
        else:
            out.append("found" if lost else "tracked")
            lost = False
    return out


def _crop(rgb: np.ndarray, box) -> np.ndarray:
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = int_box(box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    return rgb[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)].copy()
