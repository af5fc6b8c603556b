"""Annotated image of an episode: what the agent looked at and found, drawn on the frame.

Every detection is mapped back to frame pixels (zoom crops, overlays and keyframes record where
they came from), so an OCR line read inside a zoom lands on the sign in the full frame.

A person reads the result, often downscaled, so (see ``render_layout``) sizes follow the frame,
labels never cover one another (a label with no free spot becomes a number on the image and a
line in the legend under the question), each zoom's view appears as a numbered inset, and a
track ends in an arrowhead. The node renders every answer: odd inputs (no frames, boxes outside
the frame or not finite, empty boxes, grayscale frames) draw less, never raise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pixelis_ros.boxes import int_box
from pixelis_ros.episode import Episode, StepRecord
from pixelis_ros.frames import Frames
from pixelis_ros.image_codec import to_rgb8
from pixelis_ros.render_layout import Layout, Rect, Style, style_for, text_pad, text_stroke
from pixelis_ros.tools.base import Detection, ToolContext, ToolError, ToolResult

COLOURS = {"zoom": (255, 200, 0), "segment": (255, 0, 255), "track": (0, 200, 255), "temporal": (255, 255, 255), "ocr": (0, 255, 0)}
FONT = cv2.FONT_HERSHEY_SIMPLEX
MIN_INSET = 24  # px; a smaller inset shows nothing a person can read, so tiny frames get none


@dataclass
class _Mark:
    """A box to outline and label on the newest frame."""
    box: Rect
    label: str
    colour: tuple[int, int, int]
    crop: np.ndarray | None = None  # a zoom's result image, shown as an inset
    ref: str | None = None  # the crop's obs:<k>, where later calls found things in it
    number: int | None = None  # ties the box to its inset or legend line


def render_episode(episode: Episode, frames: Frames) -> np.ndarray:
    """The newest frame with the episode's boxes, masks, tracks, OCR text, zoom insets, time
    spans and answer drawn on it (RGB, the frame's size)."""
    return annotate(episode, frames)[0]


def annotate(episode: Episode, frames: Frames) -> tuple[np.ndarray, Layout]:
    """``render_episode``'s image and the layout of what it drew (header lines, inset panel,
    labels, markers, legend lines), which never intersect."""
    if len(frames) == 0:
        return np.zeros((240, 320, 3), np.uint8), Layout(320, 240)
    img = to_rgb8(frames[-1].image).copy()
    style = style_for(img.shape[1], img.shape[0])
    layout = Layout(img.shape[1], img.shape[0])
    marks: list[_Mark] = []
    spans: list[str] = []
    for record in episode.records:
        result = record.result
        if result is None or result.error is not None:
            continue
        spans += [f"{a:.2f}-{b:.2f}s" for a, b in result.spans]
        _draw_mask(img, result, frames)
        marks += _track(img, episode, result, style) + _marks(img, episode, record, frames)
    for mark in marks:
        cv2.rectangle(img, mark.box[:2], mark.box[2:], mark.colour, style.line)
    answer = episode.answer if episode.answer is not None else f"({episode.stop_reason})"
    header = [f"Q: {episode.query}", f"A: {answer}" + (f"  when: {', '.join(spans)}" if spans else "")]
    bottom = _header(img, layout, header, style.font)
    numbered = _insets(img, layout, marks, episode.detections, style)
    # A label slid away from its box reads as belonging to another: only touching spots, else a legend line.
    unplaced = [m for m in marks if not _place_label(img, layout, m.label, m.box, m.colour, style.font, slide=False)]
    _legend(img, layout, unplaced, numbered + 1, bottom, style.font)
    return img, layout


def _draw_mask(img: np.ndarray, result: ToolResult, frames: Frames) -> None:
    mask = result.mask
    if mask is not None and _frame_index(mask.image, frames) == len(frames) - 1 and mask.mask.shape == img.shape[:2]:
        m = mask.mask
        img[m] = (0.5 * img[m] + 0.5 * np.array(COLOURS["segment"])).astype(np.uint8)


def _track(img: np.ndarray, episode: Episode, result: ToolResult, style: Style) -> list[_Mark]:
    """The path of the box centre from a dot to an arrowhead (the direction of motion), and a mark
    for the box where it was last seen."""
    boxes = [episode.to_frame(d)[1] for d in result.detections if d.label == "track"]
    boxes = [b for b in boxes if all(math.isfinite(v) for v in b)]
    if not boxes:
        return []
    far = 4 * max(img.shape[:2])  # OpenCV takes 32-bit points; farther off-frame draws the same
    centres = [(min(far, max(-far, round((b[0] + b[2]) / 2))), min(far, max(-far, round((b[1] + b[3]) / 2)))) for b in boxes]
    cv2.polylines(img, [np.array(centres, np.int32)], False, COLOURS["track"], style.line, cv2.LINE_AA)
    cv2.circle(img, centres[0], 2 * style.line, COLOURS["track"], -1, cv2.LINE_AA)  # where it started
    _arrowhead(img, centres, COLOURS["track"], style.line)
    last = _visible(boxes[-1], img.shape[1], img.shape[0])
    return [_Mark(last, "track", COLOURS["track"])] if last is not None else []


def _arrowhead(img: np.ndarray, points: list[tuple[int, int]], colour, line: int) -> None:
    """A filled arrowhead at the path's end, pointing from the last point at least three heads'
    lengths back (the last steps alone are often tracker jitter around an occluder); no shaft, so
    nothing is drawn that the path did not do. None for a path that never moved."""
    head = points[-1]
    size = max(10, 8 * line)
    tail = next((p for p in reversed(points) if math.dist(p, head) >= 3 * size), points[0])
    length = math.dist(tail, head)
    if length < 1:
        return
    ux, uy = (head[0] - tail[0]) / length, (head[1] - tail[1]) / length
    bx, by = head[0] - size * ux, head[1] - size * uy
    half = 0.6 * size
    wings = [head, (bx - half * uy, by + half * ux), (bx + half * uy, by - half * ux)]
    cv2.fillPoly(img, [np.round(wings).astype(np.int32)], colour, cv2.LINE_AA)


def _marks(img: np.ndarray, episode: Episode, record: StepRecord, frames: Frames) -> list[_Mark]:
    marks, result = [], record.result
    for det in result.detections:
        ref, box = episode.to_frame(det)
        rect = _visible(box, img.shape[1], img.shape[0])
        if det.label == "track" or rect is None or _frame_index(ref, frames) != len(frames) - 1:
            continue
        label = det.label if det.label in COLOURS else f'"{det.label}"'
        zoom = det.label == "zoom" and result.images
        marks.append(_Mark(rect, label, COLOURS.get(det.label, COLOURS["ocr"]), to_rgb8(result.images[0]) if zoom else None,
                           record.image_refs[0] if zoom and record.image_refs else None))
    return marks


def _visible(box, width: int, height: int) -> Rect | None:
    """``box`` as integer pixels clipped to the frame, or None when nothing of it is on the frame."""
    if not all(math.isfinite(v) for v in box):
        return None
    x1, y1, x2, y2 = int_box(box)
    if x2 < 0 or y2 < 0 or x1 >= width or y1 >= height:
        return None
    return max(0, x1), max(0, y1), min(width - 1, max(0, x2)), min(height - 1, max(0, y2))


def _header(img: np.ndarray, layout: Layout, lines: list[str], font: float) -> int:
    """Question and answer lines at the top left, taken from the layout; returns their bottom."""
    bottom = 0
    for text in lines:
        fitted = _fit(text, layout.width, font)
        if fitted is not None and fitted[2] <= layout.height - bottom:
            rect = (0, bottom, fitted[1], bottom + fitted[2])
            _draw_band(img, fitted[0], rect, (255, 255, 255), font)
            layout.reserve(rect)
            bottom = rect[3]
    return bottom


def _insets(img: np.ndarray, layout: Layout, marks: list[_Mark], found: list[Detection], style: Style) -> int:
    """Each zoom's view, small, side by side in a dark panel in the corner that hides the least of
    the boxes, outlined in the zoom colour, numbered like its box and showing the boxes later calls
    ``found`` in it (an OCR line, magnified where it was read). Returns how many: none on
    frames too small for a legible inset, and fewer when too many zooms would make them so."""
    zooms = [m for m in marks if m.crop is not None and m.crop.size]
    gap = 2 * style.line
    # Several zooms share half the frame's width (smaller insets, the first few only) rather
    # than cover all of it.
    room = layout.width // 2
    side = max(MIN_INSET, min(style.inset, room // max(1, len(zooms)) - 2 * gap))
    if style.inset < MIN_INSET:
        return 0
    thumbs, width = [], gap
    for mark in zooms:
        thumb = _thumbnail(mark.crop, side)
        if width + thumb.shape[1] + gap > room:
            break
        thumbs.append((mark, thumb))
        width += thumb.shape[1] + gap
    height = max((t.shape[0] for _, t in thumbs), default=0) + 2 * gap
    panel = layout.corner(width, height, [m.box for m in marks]) if thumbs else None
    if panel is None:
        return 0
    img[panel[1]:panel[3], panel[0]:panel[2]] = 0
    x = panel[0] + gap
    for number, (mark, thumb) in enumerate(thumbs, 1):
        inset = (x, panel[1] + gap, x + thumb.shape[1], panel[1] + gap + thumb.shape[0])
        _draw_inset(img, thumb, inset, str(number), [d for d in found if d.image == mark.ref], mark.crop.shape, style)
        mark.number, mark.label = number, f"zoom {number}"
        x = inset[2] + gap
    return len(thumbs)


def _draw_inset(img: np.ndarray, thumb: np.ndarray, inset: Rect, tag: str, found: list[Detection], crop_shape, style: Style) -> None:
    x1, y1, x2, y2 = inset
    img[y1:y2, x1:x2] = thumb
    _outline_found(img, found, inset, crop_shape, style.line)
    t = style.line
    cv2.rectangle(img, (x1 - t, y1 - t), (x2 + t - 1, y2 + t - 1), COLOURS["zoom"], t)
    fitted = _fit(tag, x2 - x1, style.font)
    if fitted is not None and fitted[2] <= y2 - y1:
        _draw_band(img, fitted[0], (x1, y1, x1 + fitted[1], y1 + fitted[2]), COLOURS["zoom"], style.font)


def _outline_found(img: np.ndarray, dets: list[Detection], inset: Rect, crop_shape, line: int) -> None:
    fx, fy = (inset[2] - inset[0]) / crop_shape[1], (inset[3] - inset[1]) / crop_shape[0]
    t = max(1, line // 2)  # drawn just outside the box: OCR boxes hug the glyphs they name
    for det in dets:
        b = det.bbox_2d
        if all(math.isfinite(v) for v in b):
            x1, y1 = max(inset[0], round(inset[0] + b[0] * fx) - t), max(inset[1], round(inset[1] + b[1] * fy) - t)
            x2, y2 = min(inset[2] - 1, round(inset[0] + b[2] * fx) + t), min(inset[3] - 1, round(inset[1] + b[3] * fy) + t)
            if x1 <= x2 and y1 <= y2:
                cv2.rectangle(img, (x1, y1), (x2, y2), COLOURS.get(det.label, COLOURS["ocr"]), t)


def _thumbnail(crop: np.ndarray, side: int) -> np.ndarray:
    h, w = crop.shape[:2]
    f = side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(crop, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def _legend(img: np.ndarray, layout: Layout, marks: list[_Mark], first: int, top: int, font: float) -> None:
    """Labels that found no free spot: a line ``<n> <label>`` under the header, and ``<n>`` next to
    the box where that fits. A mark whose line fits nowhere is left unlabelled (its colour still
    says what it is)."""
    number = first
    for mark in marks:
        n = mark.number if mark.number is not None else number
        line = _fit(mark.label if mark.number is not None else f"{n} {mark.label}", layout.width, font)  # "zoom 1" has its number
        rect = layout.below(line[1], line[2], 0, top) if line is not None else None
        if rect is None:
            continue
        _draw_band(img, line[0], rect, mark.colour, font)
        top = rect[3]
        _place_label(img, layout, str(n), mark.box, mark.colour, font)
        if mark.number is None:
            number += 1


def _place_label(img: np.ndarray, layout: Layout, text: str, box: Rect, colour, font: float, slide: bool = True) -> bool:
    fitted = _fit(text, layout.width, font)
    rect = layout.place(fitted[1], fitted[2], box, slide) if fitted is not None else None
    if rect is not None:
        _draw_band(img, fitted[0], rect, colour, font)
    return rect is not None


def _band(text: str, font: float) -> tuple[int, int, int]:
    """Width and height of ``text`` on its dark band, and the text's baseline offset."""
    (w, h), base = cv2.getTextSize(text, FONT, font, text_stroke(font))
    pad = text_pad(font)
    return w + 2 * pad, h + base + 2 * pad, base


def _fit(text: str, width: int, font: float) -> tuple[str, int, int] | None:
    """``text`` and its band's size, shortened to its longest prefix + "..." when the band is
    wider than ``width``; None when not even "x..." fits. Always terminates."""
    text = text.encode("ascii", "replace").decode()  # Hershey fonts draw ASCII only
    w, h, _ = _band(text, font)
    if w > width:
        keep = min(len(text), len(text) * width // max(1, w))  # widths are near-proportional: start close
        while keep < len(text) and _band(text[:keep + 1] + "...", font)[0] <= width:
            keep += 1
        while keep > 0 and _band(text[:keep] + "...", font)[0] > width:
            keep -= 1  # strictly decreasing: ends after at most len(text) steps
        if keep == 0:
            return None  # no label rather than a clipped smear
        text = text[:keep] + "..."
        w, h, _ = _band(text, font)
    return text, w, h


def _draw_band(img: np.ndarray, text: str, rect: Rect, colour, font: float) -> None:
    x1, y1, x2, y2 = rect
    cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), (0, 0, 0), -1)
    pad, base = text_pad(font), _band(text, font)[2]
    cv2.putText(img, text, (x1 + pad, y2 - pad - base), FONT, font, colour, text_stroke(font), cv2.LINE_AA)


def _frame_index(ref: str, frames: Frames) -> int | None:
    """The frame index ``ref`` names, or None for tool outputs and references the frames lack."""
    try:
        return ToolContext(frames=frames).frame_index(ref)
    except ToolError:
        return None


def save_rgb(path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(to_rgb8(img)[:, :, ::-1])):
        raise OSError(f"could not write image {path}")
