"""ament_python package setup. No ``package_dir`` mapping: colcon's --symlink-install refuses
one (DESIGN §3), so the importable package sits at the repository root."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "pixelis_ros"


def data_files():
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    for folder in ("launch", "config", "sim", "models"):
        by_dir: dict[str, list[str]] = {}
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                by_dir.setdefault(f"share/{PACKAGE}/{p.parent}", []).append(str(p))
        files += sorted(by_dir.items())
    return files


EXTRAS = {
    # RapidOCR ships PP-OCR models as ONNX inside the wheel: fully offline.
    "ocr": ["rapidocr>=3.4,<4", "onnxruntime>=1.18"],
    # sam2 is an sdist; build it without its CUDA extension and without build isolation
    # (SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0), see the Makefile.
    "segment": ["torch==2.14.1", "torchvision==0.29.1", "sam2==1.1.0", "hydra-core>=1.3.2", "iopath>=0.1.10", "safetensors>=0.4"],
    # world.py reaches into mujoco.Renderer's private GL context: keep the major version known.
    "sim": ["mujoco>=3.2,<5", "gymnasium>=1.0,<2"],
    "training": ["torch==2.14.1", "torchvision==0.29.1", "transformers>=5.2", "peft>=0.17", "trl>=1.16",
                 "accelerate>=1.10", "datasets>=3.0", "tokenizers>=0.21", "safetensors>=0.4", "matplotlib>=3.7"],
    # torch.onnx.export(dynamo=True) needs onnxscript; the runtime needs only onnxruntime (+ the processor's deps).
    "export": ["onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.18"],
    # ros/dds.py relies on how cyclonedds 11.0.1 calls serialize/deserialize: pinned exactly.
    "dds": ["cyclonedds==11.0.1", "rosbags>=0.11,<0.12"],
    # colcon-core wants setuptools < 80, which is also what ROS Humble/Jazzy ship.
    "dev": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "colcon-common-extensions>=0.3", "colcon-ros>=0.5",
            "setuptools<80"],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Pixelis: a vision-language agent that reasons in pixels, as a ROS 2 plugin",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=data_files(),
    python_requires=">=3.10",
    install_requires=["numpy>=1.24", "opencv-contrib-python-headless>=4.10,<5", "pyyaml>=6"],
    extras_require=EXTRAS,
    zip_safe=True,
    maintainer="pixelis_ros developers",
    license="Apache-2.0",
    entry_points={"console_scripts": ["pixelis = pixelis_ros.cli:main", "agent_node = pixelis_ros.ros.agent_node:main",
                                      "sim_node = pixelis_ros.ros.sim_node:main"]},
)
