"""The six task families, registered by name in FAMILIES (DESIGN §5)."""

from pixelis_ros.sim.families import counting, fine_detail, spatial, temporal, text, tracking  # noqa: F401
from pixelis_ros.sim.families.base import FAMILIES, ClipConfig, Task, family, make_task

__all__ = ["FAMILIES", "ClipConfig", "Task", "family", "make_task"]
