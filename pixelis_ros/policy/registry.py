"""Policy backends by name: ``torch`` (transformers + peft), ``onnx`` (ONNX Runtime), ``tensorrt``.

Backends import heavy libraries (torch, onnxruntime, tensorrt); the robot side must not pay for
the ones it does not use, so the registry maps a name to ``module:factory`` and imports lazily.
Every factory takes the model folder and keyword options and returns a ``Policy``.
``load_policy`` reads the folder's kind first (``folder_kind``: file names only), so ``auto``
picks the backend and a missing or mismatched folder fails before any backend is imported.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pixelis_ros.extras import MissingDependency, install_hint
from pixelis_ros.policy.base import Policy, PolicyError
from pixelis_ros.policy.folder_kind import resolve_backend
from pixelis_ros.registry import Registry

BACKENDS = Registry("policy backend", PolicyError)
BACKENDS.register("torch", "pixelis_ros.policy.hf:load_hf_policy")
BACKENDS.register("onnx", "pixelis_ros.policy.onnx:load_onnx_policy")
BACKENDS.register("tensorrt", "pixelis_ros.policy.tensorrt:load_tensorrt_policy")


def load_policy(backend: str, model_dir: str | Path | None = None, **options) -> Policy:
    """The policy loaded from the local folder ``model_dir`` (no downloads) by ``backend``
    (``auto``: the one the folder is for). ``model_dir`` empty: the bundled model."""
    if backend != "auto":
        BACKENDS[backend]  # an unknown name is that error, whatever the folder
    backend, folder = resolve_backend(backend, model_dir)
    module_name, factory_name = BACKENDS[backend].split(":")
    if folder is None:
        from pixelis_ros.policy.bundled import default_model

        folder = default_model(backend)
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:  # a robot installs only the runtimes it serves
        raise MissingDependency(f"the {backend} backend needs {e.name or e}, which is not installed: "
                                f"{install_hint(e.name or backend)}") from None
    factory = getattr(module, factory_name)
    policy = factory(Path(folder), **options)
    if getattr(policy, "folder", None) is None:
        # Callers that need the served folder (test-time RL's state, with ``auto``) read it here
        # whichever backend was picked.
        policy.folder = Path(folder)
    return policy
