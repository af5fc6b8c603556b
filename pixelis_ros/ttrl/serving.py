"""The serving side of test-time RL: adapter swaps that a query never sees half-done.

``SwappablePolicy`` wraps the policy the node serves (ONNX Runtime, or torch). The worker hands
it each accepted adapter with ``offer`` — on the worker's thread, which does the slow part: for
ONNX Runtime it writes the adapter file and loads it (``onnxruntime.LoraAdapter``; no graph is
re-exported or reloaded), for torch it copies the tensors to the CPU. The swap itself happens in
``reset``, which the agent calls at the start of every episode on the serving thread: the newest
offered adapter becomes active there and nowhere else, so every turn of a query runs with one
adapter — the old or the new, never a mix — and serving never waits for the worker.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from pixelis_ros.policy.base import Generation, PolicyError

SERVE_ADAPTER = "ttrl"


def peft_lora(state: dict, rank: int, alpha: float):
    """An in-memory ``onnx_lora.PeftLora`` from the learner's adapter state (peft parameter names)."""
    from pixelis_ros.policy.onnx_lora import PEFT_PREFIX, PeftLora

    weights: dict[str, list] = {}
    for name, tensor in state.items():
        module, kind = name.removeprefix(PEFT_PREFIX).rsplit(".lora_", 1)
        weights.setdefault(module, [None, None])[0 if kind.startswith("A") else 1] = tensor.float().cpu().numpy()
    return PeftLora(Path("<test-time adapter>"), rank, float(alpha), alpha / rank, None,
                    {m: (a, b) for m, (a, b) in weights.items()})


class SwappablePolicy:
    """The served policy plus a pending adapter; everything but ``generate``/``reset`` is delegated."""

    def __init__(self, policy, rank: int, alpha: float):
        self.policy, self.rank, self.alpha = policy, rank, alpha
        self.profile = policy.profile
        self.name = policy.name
        self._lock = threading.Lock()
        self._pending: tuple[int, object] | None = None
        self.version = 0
        """Adapter version the next (or current) episode runs with; 0 is the base model."""
        self.last_swap_ms = 0.0
        if policy.name == "onnx":
            from pixelis_ros.policy.onnx_lora import adapter_spec

            self.spec = adapter_spec(policy.manifest, policy.folder)  # a merged export says how to re-export
            if self.spec["rank"] != rank:
                raise PolicyError(f"{policy.folder} was exported for LoRA rank {self.spec['rank']}, test-time RL "
                                  f"trains rank {rank}; set lora_r: {self.spec['rank']} in the TTRL config")
            self._tmp = tempfile.TemporaryDirectory(prefix="pixelis-ttrl-")
        else:
            policy.add_adapter(SERVE_ADAPTER, r=rank, alpha=alpha)
            self._params = {name.replace(f".{SERVE_ADAPTER}.", "."): p
                            for name, p in policy.model.named_parameters() if f".{SERVE_ADAPTER}." in name}
            for p in self._params.values():
                p.requires_grad_(False)

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def offer(self, version: int, state: dict) -> float:
        """Prepare adapter ``version`` (the learner's state) for the next episode; returns seconds spent."""
        t0 = time.perf_counter()
        if self.policy.name == "onnx":
            from pixelis_ros.policy.onnx_lora import check_fits, write_ort_adapter

            tensors = check_fits(peft_lora(state, self.rank, self.alpha), self.spec, self.policy.folder)
            path = write_ort_adapter(tensors, Path(self._tmp.name) / f"v{version}.onnx_adapter", self.spec["model_version"])
            self.policy._load_adapter_file(path, f"ttrl-v{version}")
            payload: object = f"ttrl-v{version}"
        else:
            payload = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        with self._lock:
            self._pending = (version, payload)
        return time.perf_counter() - t0

    def reset(self) -> None:
        """The agent calls this at the start of every episode: the swap point."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            t0 = time.perf_counter()
            self._activate(*pending)
            self.last_swap_ms = (time.perf_counter() - t0) * 1000
        if hasattr(self.policy, "reset"):
            self.policy.reset()

    def _activate(self, version: int, payload) -> None:
        if self.policy.name == "onnx":
            previous = self.policy.active_adapter
            self.policy.set_adapter(payload)
            if previous and previous.startswith("ttrl-v") and previous != payload:
                self.policy._adapters.pop(previous, None)  # loaded adapters do not pile up
                Path(self.policy.adapter_files.pop(previous)).unlink(missing_ok=True)
        else:
            import torch

            with torch.no_grad():
                for k, p in self._params.items():
                    p.copy_(payload[k])
            self.policy.set_adapter(SERVE_ADAPTER)
        self.version = version

    def generate(self, messages: list[dict], images: dict[str, np.ndarray]) -> Generation:
        return self.policy.generate(messages, images)
