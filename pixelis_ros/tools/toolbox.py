"""Toolbox: validate a tool call against the registry and run it, turning every failure into an
``{"error": ...}`` observation (DESIGN §4.3) so nothing raises out into the agent loop.

It also enforces the per-tool time budget: loops inside tools check ``ctx.deadline`` and stop
early, and a call that still overruns is flagged in its result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pixelis_ros.cota import clip, quote
from pixelis_ros.tools.arguments import ArgumentError, parse_arguments, tool_schema
from pixelis_ros.tools.base import TOOLS, Tool, ToolContext, ToolError, ToolResult


MAX_ERROR_CHARS = 1000
"""Longest error text a call returns; tools quote input bounded, this is the backstop."""


@dataclass(frozen=True)
class ToolboxConfig:
    """Which backend each tool uses and the limits every call runs under."""

    ocr_backend: str = "rapidocr"
    """OCR backend name (``rapidocr`` offline default, ``paddleocr`` with local model folders)."""
    ocr_options: dict = field(default_factory=dict)
    """Keyword options for the OCR backend (e.g. ``det_limit_side``, ``det_model_dir``)."""
    segment_backend: str = "grabcut"
    """Segmentation backend (``grabcut`` default, ``sam2`` with a ``checkpoint`` option)."""
    segment_options: dict = field(default_factory=dict)
    """Keyword options for the segmentation backend."""
    track_backend: str = "csrt"
    """Tracking backend (``csrt`` default, ``kcf``, ``mil``, ``sam2``)."""
    track_options: dict = field(default_factory=dict)
    """Keyword options for the tracking backend."""
    zoom_target_side: int = 448
    """Longer side of a zoom's output image in pixels."""
    zoom_max_upscale: float = 4.0
    """Largest enlargement a zoom applies."""
    tool_time_budget_s: float = 10.0
    """Per-call time budget; loops stop early past it and the result says so."""
    max_image_pixels: int = 4096 * 4096
    """Largest image (width x height) any tool accepts as input."""


class Toolbox:
    """The tools an agent may call, built lazily from a ``ToolboxConfig``."""

    def __init__(self, config: ToolboxConfig | None = None, enabled: list[str] | None = None):
        self.config = config or ToolboxConfig()
        TOOLS.check(list(enabled or []))
        self.enabled = list(enabled) if enabled else sorted(TOOLS)
        self._tools: dict[str, Tool] = {}

    def tool(self, name: str) -> Tool | None:
        """The enabled tool ``name``, built on first use; ``None`` when it is not enabled."""
        if name not in self.enabled:
            return None
        if name not in self._tools:
            self._tools[name] = TOOLS[name].from_config(self.config, self.tool)
        return self._tools[name]

    def build_all(self) -> None:
        """Build every enabled tool now (a node on activate), so a bad backend name, option or
        checkpoint fails at start-up with the tool's name instead of on each call."""
        for name in self.enabled:
            try:
                self.tool(name)
            except ToolError as e:
                raise ToolError(f"tool {name}: {e}") from None

    def subset(self, names: list[str]) -> "Toolbox":
        """The same tools (built once, shared) with only ``names`` offered: an action goal's tool
        subset. Unknown names raise ToolError; names this toolbox does not offer are left out."""
        TOOLS.check(list(names))
        view = Toolbox.__new__(Toolbox)  # not __init__: an empty subset must stay empty, not "all"
        view.config, view._tools = self.config, self._tools
        view.enabled = [n for n in self.enabled if n in names]
        return view

    def schemas(self) -> list[dict]:
        return [tool_schema(TOOLS[n]) for n in self.enabled]

    def validate(self, name: str, arguments: Any) -> Any:
        """Typed arguments for a call, or ArgumentError/ToolError naming what is wrong."""
        if name not in self.enabled:
            raise ToolError(f"unknown tool {quote(name)}; known tools: {self.enabled}")
        return parse_arguments(TOOLS[name].Args, name, arguments)

    def run(self, name: str, arguments: Any, ctx: ToolContext) -> ToolResult:
        """Run one call; never raises. ``result.ms`` is the call's wall time."""
        t0 = time.monotonic()
        ctx.deadline = t0 + self.config.tool_time_budget_s
        ctx.max_image_pixels = self.config.max_image_pixels
        try:
            args = self.validate(name, arguments)
            result = self.tool(name).run(args, ctx)
        except (ArgumentError, ToolError) as e:
            result = ToolResult(error=clip(str(e), MAX_ERROR_CHARS))
        except Exception as e:  # a backend bug must not take the episode down
            result = ToolResult(error=f"{name} failed: {type(e).__name__}: {clip(str(e))}")
        elapsed = time.monotonic() - t0
        if result.error is None and elapsed > self.config.tool_time_budget_s:
            result.data["over_budget"] = f"took {elapsed:.2f} s, budget {self.config.tool_time_budget_s:g} s"
        result.ms = round(elapsed * 1000, 2)
        return result
