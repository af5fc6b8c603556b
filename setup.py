"""ament_python package setup. No ``package_dir`` mapping: colcon's --symlink-install refuses
one (DESIGN §3), so the importable package sits at the repository root."""

import runpy
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "pixelis_ros"


def data_files():
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    for folder in ("launch", "config", "sim", "models", "pixelis_interfaces"):
        by_dir: dict[str, list[str]] = {}
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                by_dir.setdefault(f"share/{PACKAGE}/{p.parent}", []).append(str(p))
        files += sorted(by_dir.items())
    return files


# The optional dependencies live in one place, beside the code that imports them (DESIGN §3).
EXTRAS = runpy.run_path(str(Path(__file__).parent / PACKAGE / "extras.py"))["EXTRAS"]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Pixelis: a vision-language agent that reasons in pixels, as a ROS 2 plugin",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=data_files(),
    python_requires=">=3.10",
    install_requires=["numpy>=1.24", "opencv-contrib-python-headless>=4.10,<5", "pyyaml>=6", "tqdm>=4.60"],
    extras_require=EXTRAS,
    zip_safe=True,
    maintainer="pixelis_ros developers",
    license="Apache-2.0",
    entry_points={"console_scripts": ["pixelis = pixelis_ros.cli:main", "agent_node = pixelis_ros.ros.agent_node:main",
                                      "sim_node = pixelis_ros.ros.sim_node:main"]},
)
