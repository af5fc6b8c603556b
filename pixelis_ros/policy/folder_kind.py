"""Which backend serves a model folder, decided from its files before any backend is imported.

A model is named one way everywhere (``--model DIR``, the node parameter ``model``); the backend
follows from the folder unless it is given. Importing a backend costs seconds (torch) and a
mismatched folder used to be reported from deep inside the wrong backend ("model.safetensors is
missing" for an ONNX export), so the folder's kind is read from a few file names first: a missing
folder or the wrong kind fails at once, with what the folder is and what to do. Only file names
are looked at here; the backends' own checks (``model_folder``, ``onnx_folder``) read contents.

Kinds: an ONNX export (``pixelis export onnx``) has ``manifest.json`` and ``*.onnx`` graphs;
after ``pixelis export trt`` it also holds ``trt_cache/<key>/engines.json``, and ``auto`` then
serves it with TensorRT when TensorRT is installed here (the engines are only a cache: the onnx
backend still serves the same folder). A torch (Hugging Face) checkpoint has ``config.json`` and
its safetensors weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pixelis_ros.policy.model_folder import BUILD_HINT, PICKLE_SUFFIXES, ModelFolderError

BACKEND_CHOICES = ("auto", "torch", "onnx", "tensorrt")
"""What ``--backend`` and the node parameter ``backend`` accept; ``auto`` (the default) detects."""

EXPORT_HINT = "export one with `pixelis export onnx --model MODEL_DIR --out DIR`"
KIND_NAMES = {"torch": "a torch model folder (config.json + model.safetensors)",
              "onnx": "an ONNX export folder (manifest.json, *.onnx graphs)",
              "tensorrt": "an ONNX export folder with TensorRT engines (manifest.json + trt_cache/*/engines.json)"}


def has_engines(folder: Path) -> bool:
    """Engines built by ``pixelis export trt`` into the folder's default cache."""
    return any((folder / "trt_cache").glob("*/engines.json"))


def has_torch_weights(folder: Path) -> bool:
    """Weights of a torch checkpoint (safetensors, a shard index, or the pickles its checks refuse)."""
    return any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")) or \
        any(p.suffix in PICKLE_SUFFIXES for p in folder.iterdir())


def folder_kind(folder: str | Path) -> str:
    """``torch``, ``onnx`` or ``tensorrt`` for a model folder; ModelFolderError saying what is wrong."""
    folder = Path(folder)
    if not folder.exists():
        raise ModelFolderError(f"model folder {folder} does not exist; give a torch model folder (config.json + "
                               f"model.safetensors) or an ONNX export folder (manifest.json), or {BUILD_HINT}")
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} is a file, not a folder; give the folder that holds "
                               "config.json + model.safetensors (torch) or manifest.json (an ONNX export)")
    if (folder / "manifest.json").is_file():  # exports also copy config.json: the manifest decides
        return "tensorrt" if has_engines(folder) else "onnx"
    if any(folder.glob("*.onnx")):
        return "onnx"  # an export that lost its manifest: the onnx backend's check says so and how to fix it
    if (folder / "config.json").is_file() or has_torch_weights(folder):
        return "torch"  # config, weights missing or pickled: the torch backend's checks say which
    raise ModelFolderError(f"{folder} is not a model folder: it has neither manifest.json (an ONNX export) nor "
                           f"config.json (a torch checkpoint); {BUILD_HINT}, or {EXPORT_HINT}")


def _auto(kind: str) -> str:
    # Engines left by an export on another machine must not make a CPU robot fail: without
    # TensorRT here the same folder is served by ONNX Runtime.
    if kind == "tensorrt" and not (importlib.util.find_spec("tensorrt") and importlib.util.find_spec("onnxruntime")):
        return "onnx"
    return kind


def resolve_backend(backend: str, model: str | Path | None) -> tuple[str, Path | None]:
    """(backend, folder) for a backend name (``auto`` too) and a model folder.

    ``model`` empty: the bundled model; ``auto`` then means torch (the bundled folder is a torch
    checkpoint), and the folder is left to ``bundled.default_model`` (None here) because the onnx
    backend's is an export made on first use. A given folder must exist and be of a kind the
    backend serves; ModelFolderError otherwise, naming the kind and the fix."""
    if backend not in BACKEND_CHOICES:
        raise ModelFolderError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    if not model:
        return ("torch" if backend == "auto" else backend), None
    folder = Path(model)
    kind = folder_kind(folder)
    if backend == "auto":
        return _auto(kind), folder
    if backend == "torch" and kind != "torch":
        served = "onnx or tensorrt" if kind == "tensorrt" else "onnx"
        raise ModelFolderError(f"{folder} is {KIND_NAMES[kind]}, which the torch backend cannot load; serve it with "
                               f"backend {served} (or auto, the default), or give the torch model folder it was "
                               "exported from")
    # config.json alone may be what is left of either kind: only weights make it a torch folder
    if backend in ("onnx", "tensorrt") and kind == "torch" and has_torch_weights(folder):
        raise ModelFolderError(f"{folder} is {KIND_NAMES[kind]}, which the {backend} backend cannot load (it serves "
                               f"ONNX exports); serve it with backend torch (or auto, the default), or export it "
                               f"first: `pixelis export onnx --model {folder} --out DIR`")
    return backend, folder
