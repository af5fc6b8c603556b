"""The bundled default model (``models/pixelis-small``) and its ONNX export, cached on first use.

Every command and node that is given neither a model nor a script serves this folder. It is a
small Qwen3-VL trained from scratch on the simulator's worlds (its model card says what it is
and is not). For the ONNX backend the export is made once, on first use, into a cache folder
keyed by the weights' digest (``$PIXELIS_CACHE``, default ``~/.cache/pixelis``), written to a
temporary folder and renamed into place so a crash never leaves half an export; the repository
never holds it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pixelis_ros.policy.base import PolicyError

BUNDLED_NAME = "pixelis-small"


def bundled_model() -> Path:
    """The bundled model folder (in the checkout or the installed share folder)."""
    from pixelis_ros.paths import data_dir

    try:
        folder = data_dir("models") / BUNDLED_NAME
    except FileNotFoundError as e:
        raise PolicyError(f"the bundled model is not installed ({e}); give a model folder") from None
    if not (folder / "config.json").is_file():
        raise PolicyError(f"the bundled model {folder} is missing; rebuild it with `make model` or give a model folder")
    return folder


def cache_dir() -> Path:
    return Path(os.environ.get("PIXELIS_CACHE") or Path.home() / ".cache" / "pixelis")


def zero_adapter(model_dir: Path, folder: Path, rank: int, alpha: float) -> Path:
    """A fresh LoRA adapter folder for ``model_dir`` whose ``lora_B`` is zero: exactly the base model."""
    from pixelis_ros.policy.hf import load_hf_policy

    policy = load_hf_policy(model_dir, heads="off")
    policy.add_adapter("default", r=rank, alpha=alpha)
    return policy.save_adapter(folder)


def cached_onnx(model_dir: str | Path, lora_rank: int = 0, lora_alpha: float = 16) -> Path:
    """The ONNX export of ``model_dir``, made on first use and reused while its weights are unchanged.
    ``lora_rank > 0``: an export that takes LoRA adapters of that rank as inputs (``--lora adapters``,
    exported with a zero adapter), what test-time RL swaps adapters into."""
    from pixelis_ros.policy.export_onnx import ExportConfig, export_onnx, weights_digest

    model_dir = Path(model_dir)
    suffix = f"-lora{lora_rank}a{lora_alpha:g}" if lora_rank else ""
    target = cache_dir() / "onnx" / f"{model_dir.name}-{weights_digest(model_dir)[:12]}{suffix}"
    if (target / "manifest.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        export = ExportConfig()
        if lora_rank:
            adapter = zero_adapter(model_dir, tmp / "zero-adapter", lora_rank, lora_alpha)
            export = ExportConfig(adapter=str(adapter), lora="adapters")
        export_onnx(model_dir, tmp / "export" if lora_rank else tmp, export)
        if lora_rank:  # the export goes in place of the folder; the zero adapter is not kept
            shutil.rmtree(tmp / "zero-adapter")
            for item in (tmp / "export").iterdir():
                item.rename(tmp / item.name)
            (tmp / "export").rmdir()
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: use its export
            if not (target / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def default_model(backend: str = "torch") -> Path:
    """The folder a backend serves when no model is given: the bundled model (its ONNX export for ``onnx``)."""
    folder = bundled_model()
    return folder if backend == "torch" else cached_onnx(folder)  # onnx and tensorrt both serve the ONNX folder
