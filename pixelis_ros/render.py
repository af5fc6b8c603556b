"""Annotated image of an episode: what the agent looked at and found, drawn on the frame.

Every detection is mapped back to frame pixels (zoom crops, overlays and keyframes record where
they came from), so an OCR line read inside a zoom lands on the sign in the full frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from pixelis_ros.boxes import int_box
from pixelis_ros.episode import Episode
from pixelis_ros.frames import Frames
from pixelis_ros.image_codec import to_rgb8
from pixelis_ros.tools.base import ToolContext, ToolError

COLOURS = {"zoom": (255, 200, 0), "segment": (255, 0, 255), "track": (0, 200, 255), "temporal": (255, 255, 255), "ocr": (0, 255, 0)}


def _label(img: np.ndarray, text: str, x: int, y: int, colour, scale: float) -> None:
    """Draw ``text`` on a dark band with its left edge at ``x`` (moved left, then shortened with
    "...", then dropped, until it fits the image's width). Always terminates, for any image
    down to 1x1 and any text length."""
    width = img.shape[1]
    text = text.encode("ascii", "replace").decode()  # Hershey fonts draw ASCII only

    def size(t: str) -> tuple[int, int, int]:
        (w, h), base = cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        return w, h, base

    w, h, base = size(text)
    if w > width:  # wider than the image: keep the longest prefix + "..." that fits
        keep = min(len(text), len(text) * width // max(1, w))  # widths are near-proportional: start close
        while keep < len(text) and size(text[:keep + 1] + "...")[0] <= width:
            keep += 1
        while keep > 0 and size(text[:keep] + "...")[0] > width:
            keep -= 1  # strictly decreasing: ends after at most len(text) steps
        if keep == 0:
            return  # not even "x..." fits: no label rather than a clipped smear
        text = text[:keep] + "..."
        w, h, base = size(text)
    x = max(0, min(x, width - w))  # slide left so the whole label is inside
    y = max(h + base, y)
    cv2.rectangle(img, (x, y - h - base), (x + w, y), (0, 0, 0), -1)
    cv2.putText(img, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def render_episode(episode: Episode, frames: Frames) -> np.ndarray:
    """The newest frame with the episode's boxes, masks, tracks, OCR text, time spans and answer
    drawn on it (RGB)."""
    if len(frames) == 0:
        return np.zeros((240, 320, 3), np.uint8)
    newest = len(frames) - 1
    img = to_rgb8(frames[-1].image).copy()
    scale = max(0.4, img.shape[1] / 1600)
    thickness = max(1, img.shape[1] // 640)
    spans: list[str] = []
    for record in episode.records:
        result = record.result
        if result is None or result.error is not None:
            continue
        spans += [f"{a:.2f}-{b:.2f}s" for a, b in result.spans]
        if result.mask is not None and _frame_index(result.mask.image, frames) == newest:
            m = result.mask.mask
            img[m] = (0.5 * img[m] + 0.5 * np.array(COLOURS["segment"])).astype(np.uint8)
        track = [episode.to_frame(d)[1] for d in result.detections if d.label == "track"]
        if track:  # the path of the box centre, and the box where it was last seen
            centres = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in track], np.int32)
            cv2.polylines(img, [centres], False, COLOURS["track"], thickness, cv2.LINE_AA)
            _box(img, track[-1], "track", COLOURS["track"], scale, thickness)
        for det in result.detections:
            ref, box = episode.to_frame(det)
            if det.label != "track" and _frame_index(ref, frames) == newest:
                label = det.label if det.label in COLOURS else f'"{det.label}"'
                _box(img, box, label, COLOURS.get(det.label, COLOURS["ocr"]), scale, thickness)
    answer = episode.answer if episode.answer is not None else f"({episode.stop_reason})"
    line = int(30 * scale) + 4
    _label(img, f"Q: {episode.query}", 0, line, (255, 255, 255), scale)
    _label(img, f"A: {answer}" + (f"  when: {', '.join(spans)}" if spans else ""), 0, 2 * line, (255, 255, 255), scale)
    return img


def _box(img: np.ndarray, box, label: str, colour, scale: float, thickness: int) -> None:
    x1, y1, x2, y2 = int_box(box)
    cv2.rectangle(img, (x1, y1), (x2, y2), colour, thickness)
    _label(img, label, x1, y1 - 2, colour, scale)


def _frame_index(ref: str, frames: Frames) -> int | None:
    """The frame index ``ref`` names, or None for tool outputs and references the frames lack."""
    try:
        return ToolContext(frames=frames).frame_index(ref)
    except ToolError:
        return None


def save_rgb(path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(to_rgb8(img)[:, :, ::-1])):
        raise OSError(f"could not write image {path}")
