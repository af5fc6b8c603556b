"""The contract every pixel tool follows: typed arguments in, a ``ToolResult`` out.

A tool is a class with a ``name``, a ``description``, an ``Args`` dataclass (whose fields give
the JSON schema, see ``arguments``) and ``run(args, ctx)``. Tools register by name in
``TOOLS`` (one registry for the family, DESIGN §4.9). ``ToolContext`` is what a call may look
at: the episode's frame snapshot and the images earlier calls produced (``obs:<k>``).

Tools raise ``ToolError`` for problems the caller can fix (bad reference, box outside the
image); the ``Toolbox`` turns any exception into an ``{"error": ...}`` observation.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from pixelis_ros.boxes import MIN_BOX_SIDE, check_box, check_point, round_box
from pixelis_ros.cota import quote
from pixelis_ros.frames import FrameLookupError, Frames
from pixelis_ros.image_codec import to_rgb8
from pixelis_ros.registry import Registry


# Boxes that only locate an object (track, segment) may be smaller than a crop; trackers and
# segmenters still need a few pixels to work with.
MIN_OBJECT_SIDE = 4


class ToolError(ValueError):
    """A tool call that cannot be executed as asked; the message says what to change."""


@dataclass
class Detection:
    """A box in the pixels of the image named by ``image`` (a reference like ``frame:-1``)."""

    bbox_2d: tuple[float, float, float, float]
    image: str
    label: str = ""
    score: float | None = None

    def to_json(self) -> dict:
        out: dict[str, Any] = {"bbox_2d": round_box(self.bbox_2d), "image": self.image}
        if self.label:
            out["label"] = self.label
        if self.score is not None:
            out["score"] = round(float(self.score), 4)
        return out


@dataclass
class MaskSummary:
    """A segmentation mask and what the model needs to know of it."""

    image: str
    mask: np.ndarray  # HxW bool in the pixels of ``image``
    bbox_2d: tuple[float, float, float, float]
    area: int
    centroid: tuple[float, float]

    def to_json(self) -> dict:
        return {"image": self.image, "bbox_2d": round_box(self.bbox_2d), "area": int(self.area),
                "centroid": [round(self.centroid[0], 1), round(self.centroid[1], 1)]}


@dataclass
class ToolResult:
    """What a tool returns. ``data`` is the tool's JSON output (the CLI prints it); ``images``
    become ``obs:<k>`` references and are shown to the model as a new user turn."""

    data: dict = field(default_factory=dict)
    text: str = ""
    images: list[np.ndarray] = field(default_factory=list)
    # For each image: the reference it was cut from and the box it shows there, so boxes found
    # later on ``obs:<k>`` can be drawn back on the frame.
    image_origins: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    mask: MaskSummary | None = None
    spans: list[tuple[float, float]] = field(default_factory=list)
    error: str | None = None
    ms: float = 0.0  # wall time of the call, set by the Toolbox
    # Keys of ``data`` the model sees (None: all). A tool whose full output is long (per-frame
    # boxes) shows the model the few fields that decide a question; the trace keeps all of it.
    model_keys: tuple[str, ...] | None = None

    def response_json(self, image_refs: list[str] | None = None) -> dict:
        """The JSON the model sees inside ``<tool_response>``: the data (its ``model_keys``), a
        one-line summary and the references of the images shown with it."""
        if self.error is not None:
            return {"error": self.error}
        out = dict(self.data) if self.model_keys is None else {k: self.data[k] for k in self.model_keys if k in self.data}
        if self.text and "text" not in out:
            out["summary"] = self.text
        if image_refs:
            out["images"] = image_refs
        return out


@dataclass
class ToolContext:
    """What a tool call may read: the episode's frames and earlier tool output images."""

    frames: Frames
    observations: list[np.ndarray] = field(default_factory=list)
    max_image_pixels: int = 4096 * 4096
    deadline: float = float("inf")  # time.monotonic() after which loops should stop early
    progress: bool = False  # a bar over long scans (``pixelis tools``); in an episode, the steps are the progress

    def image(self, ref: str) -> np.ndarray:
        """Resolve ``frame:<index>``, ``frame:<seconds>s`` or ``obs:<k>`` to an RGB uint8 image."""
        return to_rgb8(self.raw_image(ref))

    def raw_image(self, ref: str) -> np.ndarray:
        kind, value = parse_image_ref(ref)
        if kind == "obs":
            if not 0 <= value < len(self.observations):
                have = f"obs:0..obs:{len(self.observations) - 1}" if self.observations else "none yet"
                raise ToolError(f"unknown image reference '{ref}': earlier tool outputs are {have}")
            img = self.observations[int(value)]
        else:
            img = self.frames[self.frame_index(ref)].image
        pixels = int(img.shape[0]) * int(img.shape[1])
        if pixels > self.max_image_pixels:
            raise ToolError(f"image '{ref}' has {pixels} pixels, over the cap of {self.max_image_pixels}")
        return img

    def depth(self, ref: str) -> np.ndarray | None:
        """The depth map (metres) of the frame ``ref`` names; None for tool outputs or no depth."""
        if parse_image_ref(ref)[0] != "frame":
            return None
        return self.frames[self.frame_index(ref)].depth

    def frame_index(self, ref: str) -> int:
        kind, value = parse_image_ref(ref)
        if kind != "frame":
            raise ToolError(f"'{ref}' names a tool output; this argument needs a frame (frame:<index> or frame:<seconds>s)")
        try:
            return self.frames.index_at(value) if isinstance(value, float) else self.frames.index_of(value)
        except FrameLookupError as e:
            raise ToolError(str(e)) from None

    def check_box(self, box, ref: str, name: str = "bbox_2d", min_side: float = MIN_BOX_SIDE) -> tuple[float, float, float, float]:
        img = self.raw_image(ref)
        clamped, err = check_box(box, img.shape[1], img.shape[0], name, min_side)
        if err:
            raise ToolError(err)
        return clamped  # type: ignore[return-value]

    def check_point(self, point, ref: str, name: str = "point_2d") -> tuple[float, float]:
        img = self.raw_image(ref)
        err = check_point(point, img.shape[1], img.shape[0], name)
        if err:
            raise ToolError(err)
        return float(point[0]), float(point[1])

    def check_time_left(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise ToolError(f"{what} ran out of its time budget")


_REF = re.compile(r"^(frame|obs):(-?\d+|-?\d+(?:\.\d+)?s)$")
_REF_HELP = "use frame:<index> (frame:-1 = newest), frame:<seconds>s or obs:<k>"
# Longer than any real reference ("frame:-123456", "frame:12345.678s"); checked before int(),
# which refuses numbers of 4,300+ digits with an error of its own.
MAX_REF_CHARS = 32


def parse_image_ref(ref: str) -> tuple[str, int | float]:
    """``frame:-1`` -> ("frame", -1); ``frame:1.5s`` -> ("frame", 1.5); ``obs:0`` -> ("obs", 0)."""
    if isinstance(ref, str) and len(ref.strip()) > MAX_REF_CHARS:
        raise ToolError(f"unknown image reference {quote(ref, 40)}: a reference has at most {MAX_REF_CHARS} characters; {_REF_HELP}")
    m = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if not m:
        raise ToolError(f"unknown image reference {quote(ref)}: {_REF_HELP}")
    kind, value = m.groups()
    if value.endswith("s"):
        if kind == "obs":
            raise ToolError(f"unknown image reference {quote(ref)}: obs:<k> takes an integer index")
        return kind, float(value[:-1])
    if kind == "obs" and int(value) < 0:
        raise ToolError(f"unknown image reference {quote(ref)}: obs:<k> takes k >= 0")
    return kind, int(value)


class Tool:
    """Base class of pixel tools. Subclasses set ``name``, ``description``, ``Args``."""

    name: ClassVar[str]
    description: ClassVar[str]
    Args: ClassVar[type]

    @classmethod
    def from_config(cls, config: Any, tool: Callable[[str], "Tool | None"]) -> "Tool":
        """The tool as a ``ToolboxConfig`` sets it up; ``tool(name)`` is another enabled tool (or None)."""
        return cls()

    def run(self, args: Any, ctx: ToolContext) -> ToolResult:  # pragma: no cover - interface
        raise NotImplementedError


TOOLS: Registry = Registry("tool", ToolError)


def register_tool(cls: type[Tool]) -> type[Tool]:
    return TOOLS.register(cls.name, cls)


def make_registry(family: str) -> tuple[Registry, Callable[[str], Callable]]:
    """A name -> factory registry for one backend family, with its ``register(name)`` decorator."""
    registry = Registry(f"{family} backend", ToolError)
    return registry, registry.register


def build_backend(registry: Registry, name: str, options: dict):
    """The backend ``name`` built with ``options``; a wrong option is the tool's error, not a TypeError."""
    try:
        return registry[name](**options)
    except TypeError as e:
        raise ToolError(f"{registry.kind} {quote(name)}: bad options {quote(sorted(options))} ({e})") from None
