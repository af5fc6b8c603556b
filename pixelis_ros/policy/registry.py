"""Policy backends by name: ``torch`` (transformers + peft), ``onnx`` (ONNX Runtime), ``tensorrt``.

Backends import heavy libraries (torch, onnxruntime, tensorrt); the robot side must not pay for
the ones it does not use, so the registry maps a name to ``module:factory`` and imports lazily.
Every factory takes the model folder and keyword options and returns a ``Policy``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pixelis_ros.extras import MissingDependency, install_hint
from pixelis_ros.policy.base import Policy, PolicyError
from pixelis_ros.registry import Registry

BACKENDS = Registry("policy backend", PolicyError)
BACKENDS.register("torch", "pixelis_ros.policy.hf:load_hf_policy")
BACKENDS.register("onnx", "pixelis_ros.policy.onnx:load_onnx_policy")
BACKENDS.register("tensorrt", "pixelis_ros.policy.tensorrt:load_tensorrt_policy")


def load_policy(backend: str, model_dir: str | Path, **options) -> Policy:
    """The policy of ``backend`` loaded from the local folder ``model_dir`` (no downloads)."""
    module_name, factory_name = BACKENDS[backend].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:  # a robot installs only the runtimes it serves
        raise MissingDependency(f"the {backend} backend needs {e.name or e}, which is not installed: "
                                f"{install_hint(e.name or backend)}") from None
    factory = getattr(module, factory_name)
    return factory(Path(model_dir), **options)
