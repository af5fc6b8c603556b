"""Where the files beside the code live: ``sim/`` (worlds, suites), ``models/``, ``config/``.

They sit at the repository root in a checkout (and an editable install), and in
``share/pixelis_ros/`` once colcon or pip installs the package's data files (DESIGN §3 explains
why they cannot live inside the Python package).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "pixelis_ros"


def data_dir(name: str) -> Path:
    """The first existing ``<root>/<name>`` among the checkout, this prefix and ROS prefixes."""
    candidates = [Path(__file__).resolve().parents[1] / name, Path(sys.prefix) / "share" / PACKAGE / name]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / PACKAGE / name)
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"cannot find the {name}/ folder; looked in: {', '.join(str(p) for p in candidates)}")
