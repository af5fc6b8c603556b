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
from pixelis_ros.tools.base import parse_image_ref

COLOURS = {"zoom": (255, 200, 0), "segment": (255, 0, 255), "track": (0, 200, 255), "ocr": (0, 255, 0)}


def _label(img: np.ndarray, text: str, x: int, y: int, colour, scale: float) -> None:
    text = text.encode("ascii", "replace").decode()[:60]  # Hershey fonts draw ASCII only
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = max(h + base, y)
    cv2.rectangle(img, (x, y - h - base), (x + w, y), (0, 0, 0), -1)
    cv2.putText(img, text, (x, y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def render_episode(episode: Episode, frames: Frames) -> np.ndarray:
    """The newest frame with the episode's boxes, mask, track and answer drawn on it (RGB)."""
    if len(frames) == 0:
        return np.zeros((240, 320, 3), np.uint8)
    newest = len(frames) - 1
    img = to_rgb8(frames[-1].image).copy()
    scale = max(0.4, img.shape[1] / 1600)
    thickness = max(1, img.shape[1] // 640)
    for record in episode.records:
        result = record.result
        if result is None or result.error is not None:
            continue
        if result.mask is not None and _frame_index(result.mask.image, frames) == newest:
            img[result.mask.mask] = (0.5 * img[result.mask.mask] + 0.5 * np.array(COLOURS["segment"])).astype(np.uint8)
        track = [d for d in result.detections if d.label == "track"]
        centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in (d.bbox_2d for d in track)]
        if len(centres) > 1:
            cv2.polylines(img, [np.array(centres, np.int32)], False, COLOURS["track"], thickness, cv2.LINE_AA)
        for det in result.detections:
            if det.label == "track" and det is not (track[-1] if track else None):
                continue
            ref, box = episode.to_frame(det)
            if _frame_index(ref, frames) != newest and det.label != "track":
                continue
            colour = COLOURS.get(det.label, COLOURS["ocr"])
            x1, y1, x2, y2 = int_box(box)
            cv2.rectangle(img, (x1, y1), (x2, y2), colour, thickness)
            _label(img, det.label if det.label in COLOURS else f'"{det.label}"', x1, y1 - 2, colour, scale)
    banner = f"Q: {episode.query}  A: {episode.answer if episode.answer is not None else '(' + episode.stop_reason + ')'}"
    _label(img, banner, 0, int(30 * scale) + 4, (255, 255, 255), scale)
    return img


def _frame_index(ref: str, frames: Frames) -> int | None:
    try:
        kind, value = parse_image_ref(ref)
    except ValueError:
        return None
    if kind != "frame":
        return None
    try:
        return frames.index_at(value) if isinstance(value, float) else frames.index_of(value)
    except LookupError:
        return None


def save_rgb(path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(to_rgb8(img)[:, :, ::-1])):
        raise OSError(f"could not write image {path}")
