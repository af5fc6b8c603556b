"""The five pixel tools (zoom, ocr, segment, track, temporal), registered by name in TOOLS."""

from pixelis_ros.tools import ocr, sam2_backend, segment, temporal, track, zoom  # noqa: F401  (registration)
from pixelis_ros.tools.base import TOOLS, ToolContext, ToolError, ToolResult
from pixelis_ros.tools.toolbox import Toolbox, ToolboxConfig

__all__ = ["TOOLS", "ToolContext", "ToolError", "ToolResult", "Toolbox", "ToolboxConfig"]
