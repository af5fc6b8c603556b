"""Where the annotations of an annotated image go, and how big they are.

A person reads the image, so labels must never cover one another and must stay legible on
anything from a 320x240 camera frame to a 4000x2700 photo. This module is geometry only (no
drawing): the renderer asks it for a free spot for each label or panel, and tests check the
rectangles it handed out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, ends exclusive


@dataclass(frozen=True)
class Style:
    font: float  # Hershey font scale
    line: int  # stroke of boxes, paths and outlines
    inset: int  # longest side of a zoom's inset, px


def style_for(width: int, height: int) -> Style:
    """Sizes proportional to the short side: a downscaled 4000x2700 photo still shows text about
    as tall as a 1080p frame does, and a 320x240 frame keeps the thinnest legible strokes."""
    short = max(1, min(width, height))
    return Style(font=max(0.4, short / 1100), line=max(1, round(short / 450)), inset=round(short * 0.28))


def text_stroke(font: float) -> int:
    return max(1, round(font * 1.2))


def text_pad(font: float) -> int:
    return max(1, round(2 * font))


def intersects(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def overlap_area(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


class Layout:
    """The rectangles already used on a ``width`` x ``height`` image (``taken``, in the order
    handed out); ``place``, ``below`` and ``corner`` find free ones and take them."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.taken: list[Rect] = []

    def reserve(self, rect: Rect) -> None:
        self.taken.append(rect)

    def is_free(self, rect: Rect) -> bool:
        return not any(intersects(rect, t) for t in self.taken)

    def place(self, w: int, h: int, box: Rect, slide: bool = True) -> Rect | None:
        """A free ``w`` x ``h`` spot touching ``box``: above it, below it, inside its top, inside its
        bottom (left-aligned, then right-aligned), and with ``slide`` failing those each of these
        slid just past whatever is in its way. None when all are taken."""
        if w > self.width or h > self.height:
            return None
        return self._take(next((r for r in self._around(w, h, box, slide) if self.is_free(r)), None))

    def below(self, w: int, h: int, x: int, y: int) -> Rect | None:
        """The highest free ``w`` x ``h`` spot at ``x`` starting at ``y`` or lower: the next line of
        a column that skips whatever already sits in it."""
        if w > self.width or h > self.height:
            return None
        tops = sorted({y} | {t[3] for t in self.taken if t[3] > y})
        return self._take(next((r for r in (self._inside(x, top, w, h) for top in tops) if r[1] >= y and self.is_free(r)), None))

    def corner(self, w: int, h: int, avoid: list[Rect]) -> Rect | None:
        """The free ``w`` x ``h`` spot in a corner (or just past what blocks a corner) that covers
        the least area of the ``avoid`` boxes: a panel should hide as little of the findings as
        possible."""
        if w > self.width or h > self.height:
            return None
        corners = [self._inside(x, y, w, h) for y in (self.height - h, 0) for x in (0, self.width - w)]
        free = [r for r in corners + list(self._slid(corners, w, h)) if self.is_free(r)]
        return self._take(min(free, key=lambda r: sum(overlap_area(r, b) for b in avoid), default=None))

    def _take(self, rect: Rect | None) -> Rect | None:
        if rect is not None:
            self.taken.append(rect)
        return rect

    def _around(self, w: int, h: int, box: Rect, slide: bool) -> Iterator[Rect]:
        x1, y1, x2, y2 = box
        spots = [self._inside(x, y, w, h) for y in (y1 - h, y2, y1, y2 - h) for x in (x1, x2 - w)]
        yield from spots
        if slide:
            yield from self._slid(spots, w, h)

    def _slid(self, spots: list[Rect], w: int, h: int) -> Iterator[Rect]:
        # One step past each blocker (below, above, right, left) is enough in practice and keeps
        # the search bounded: spots x taken x 4 candidates.
        for rect in spots:
            for t in list(self.taken):
                if intersects(rect, t):
                    for x, y in ((rect[0], t[3]), (rect[0], t[1] - h), (t[2], rect[1]), (t[0] - w, rect[1])):
                        yield self._inside(x, y, w, h)

    def _inside(self, x: int, y: int, w: int, h: int) -> Rect:
        x, y = max(0, min(x, self.width - w)), max(0, min(y, self.height - h))
        return x, y, x + w, y + h
