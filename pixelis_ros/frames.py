"""FrameBuffer: the camera's recent past, as a timestamped ring bounded by count and bytes.

The camera callback pushes; an episode takes a ``snapshot()`` (an immutable ``Frames``) so that
frames evicted while the episode runs do not shift the indices its tool calls refer to. Lookup
is by index (``-1`` = newest) or by time (seconds, same clock as the stamps). Conversions from
ROS image message fields live in ``image_codec``; this module only stores arrays.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np


class FrameLookupError(LookupError):
    """A frame index or time that the buffer does not hold."""


@dataclass(eq=False)
class Frame:
    """One camera frame. ``image`` is HxWx3 RGB uint8 or HxW (mono); ``depth`` is HxW metres."""

    image: np.ndarray
    stamp: float
    frame_id: str = ""
    depth: np.ndarray | None = None
    _thumbs: dict = field(default_factory=dict, repr=False)

    @property
    def nbytes(self) -> int:
        return int(self.image.nbytes + (self.depth.nbytes if self.depth is not None else 0))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.image.shape[1]), int(self.image.shape[0])


class Frames(Sequence[Frame]):
    """An immutable, time-ordered run of frames with lookup by index or time."""

    def __init__(self, frames: Sequence[Frame]):
        self._frames = tuple(frames)

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, i):  # type: ignore[override]
        return self._frames[i]

    def __iter__(self) -> Iterator[Frame]:
        return iter(self._frames)

    @property
    def period(self) -> float:
        """Median spacing between frames in seconds (0 for fewer than two frames)."""
        if len(self._frames) < 2:
            return 0.0
        return float(np.median(np.diff([f.stamp for f in self._frames])))

    @property
    def span(self) -> tuple[float, float]:
        """(first stamp, end of the last frame's display interval)."""
        if not self._frames:
            raise FrameLookupError("the frame buffer is empty")
        return self._frames[0].stamp, self._frames[-1].stamp + self.period

    def index_of(self, index: int) -> int:
        n = len(self._frames)
        if n == 0:
            raise FrameLookupError("the frame buffer is empty: no frame has been received yet")
        if not -n <= index < n:
            raise FrameLookupError(f"frame index {index} is outside the buffer (it holds {n} frames: 0..{n - 1} or -{n}..-1)")
        return index % n

    def index_at(self, t: float) -> int:
        """Index of the frame shown at time ``t`` (the last frame stamped at or before ``t``)."""
        t0, t1 = self.span
        tolerance = 1e-6
        if not (t0 - tolerance <= t <= t1 + tolerance) or (len(self._frames) == 1 and abs(t - t0) > tolerance):
            raise FrameLookupError(f"time {t:g} s is outside the buffer, which covers {t0:g}..{t1:g} s")
        stamps = np.fromiter((f.stamp for f in self._frames), dtype=np.float64, count=len(self._frames))
        return max(0, int(np.searchsorted(stamps, t + tolerance, side="right")) - 1)

    def end_of(self, i: int) -> float:
        """End time of frame ``i``'s display interval (the next frame's stamp)."""
        if i + 1 < len(self._frames):
            return self._frames[i + 1].stamp
        return self._frames[i].stamp + self.period


class FrameBuffer:
    """Thread-safe ring of frames bounded by ``max_frames`` and ``max_bytes``."""

    def __init__(self, max_frames: int = 300, max_bytes: int = 512 * 1024 * 1024):
        if max_frames < 1 or max_bytes < 1:
            raise ValueError("FrameBuffer needs max_frames >= 1 and max_bytes >= 1")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._frames: deque[Frame] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.dropped = 0  # frames refused (too large, out of order)
        self.evicted = 0

    def push(self, frame: Frame) -> None:
        """Append a frame; evict the oldest to stay within bounds. Raises ValueError (and keeps
        the buffer unchanged) for a frame that can never fit or arrives out of time order."""
        if frame.nbytes > self.max_bytes:
            self.dropped += 1
            raise ValueError(f"frame of {frame.nbytes} bytes exceeds the buffer's max_bytes={self.max_bytes}")
        with self._lock:
            if self._frames and frame.stamp < self._frames[-1].stamp:
                self.dropped += 1
                raise ValueError(f"frame stamp {frame.stamp:.6f} s is older than the newest buffered {self._frames[-1].stamp:.6f} s")
            self._frames.append(frame)
            self._bytes += frame.nbytes
            while len(self._frames) > self.max_frames or self._bytes > self.max_bytes:
                self._bytes -= self._frames.popleft().nbytes
                self.evicted += 1

    def add(self, image: np.ndarray, stamp: float, frame_id: str = "", depth: np.ndarray | None = None) -> Frame:
        frame = Frame(image=image, stamp=float(stamp), frame_id=frame_id, depth=depth)
        self.push(frame)
        return frame

    def snapshot(self) -> Frames:
        with self._lock:
            return Frames(tuple(self._frames))

    def __len__(self) -> int:
        return len(self._frames)

    def newest_stamp(self) -> float | None:
        with self._lock:
            return self._frames[-1].stamp if self._frames else None

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0
