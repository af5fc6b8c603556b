"""The background worker that adapts the served policy while the robot works.

Serving hands every answered query to ``submit``, which never blocks: the queue is bounded and
the oldest waiting query is dropped when it is full. The worker thread processes queries at
most ``updates_per_minute`` a minute with ``threads`` torch threads, offers each new adapter to
the ``SwappablePolicy`` (which swaps it in between episodes) and saves its state atomically
every ``save_every`` accepted updates and on stop. A query that fails inside the worker is
counted and logged, never raised: the worker keeps going and serving never notices.

``start_ttrl`` builds all of it for a node: the learner on a torch copy of the served model
(for an ONNX folder, the torch folder it was exported from), the serving wrapper and the saved
state (a state that cannot be used is reported and the base adapter served).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from pathlib import Path

from pixelis_ros.ttrl.learner import TRAINED

WORKER_NICE = 10
"""The worker thread's scheduling priority is lowered by this much (Linux sets niceness per thread):
when serving and learning compete for the cores, serving wins."""


def lower_priority() -> None:
    """Lower the calling thread's priority (where the OS allows it; elsewhere nothing happens)."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
    except (AttributeError, OSError):
        pass


class TTRLWorker:
    def __init__(self, ttrl, serving, config, state_path: Path | None, model_id: str, log=print):
        self.ttrl, self.serving, self.config = ttrl, serving, config
        self.state_path, self.model_id, self.log = state_path, model_id, log
        self._queue: deque = deque(maxlen=config.queue_size)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = self.failed = self.processed = 0
        self.last: dict = {}
        self.last_error = ""
        self._saved_at = 0

    def submit(self, question: str, frames) -> None:
        """Queue an answered query for learning (never blocks; the oldest waiting one is dropped when full)."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append((question, frames))
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="pixelis-ttrl", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.save()

    def _loop(self) -> None:
        import torch

        torch.set_num_threads(self.config.threads)
        lower_priority()
        gap = 60.0 / self.config.updates_per_minute if self.config.updates_per_minute else 0.0
        next_start = 0.0
        while not self._stop.is_set():
            if not self._queue:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            if time.monotonic() < next_start:  # the compute budget
                self._stop.wait(next_start - time.monotonic())
                continue
            question, frames = self._queue.popleft()
            next_start = time.monotonic() + gap
            self.step(question, frames)

    def step(self, question: str, frames) -> dict:
        """One query, on the calling thread (the loop, or a test)."""
        try:
            return self._step(question, frames)
        finally:
            self.processed += 1

    def _step(self, question: str, frames) -> dict:
        version = self.ttrl.counters.version
        try:
            self.last = self.ttrl.process(question, frames)
        except Exception as e:  # a worker failure must never reach serving
            self.failed += 1
            self.last_error = f"test-time update failed: {type(e).__name__}: {str(e)[:200]}"
            self.log(self.last_error)
            return {"decision": "failed", "error": self.last_error}
        if self.ttrl.counters.version != version and self.serving is not None:
            self.serving.offer(self.ttrl.counters.version, self.ttrl.learner.state(TRAINED))
        accepted = self.ttrl.corridor.state.accepted
        if self.config.save_every and accepted - self._saved_at >= self.config.save_every:
            self.save()
        return self.last

    def save(self) -> None:
        if self.state_path is None:
            return
        try:
            self.ttrl.save(self.state_path, self.model_id)
            self._saved_at = self.ttrl.corridor.state.accepted
        except OSError as e:
            self.last_error = f"cannot save the test-time state to {self.state_path}: {e.strerror or e}"
            self.log(self.last_error)

    def status(self) -> dict:
        """What the node's diagnostics publish."""
        state, c = self.ttrl.corridor.state, self.ttrl.counters
        kl = c.kl_trace[-1][1] if c.kl_trace else 0.0
        corridor = {"accepted": "inside", "rejected": "rejected (above kl_high)",
                    "rolled_back": "rolled back (drift)"}.get(self.last.get("decision"), "waiting")
        return {"ttrl": "on", "ttrl_kl": round(kl, 6), "ttrl_corridor": corridor, "ttrl_scale": round(state.scale, 4),
                "ttrl_updates_accepted": state.accepted, "ttrl_updates_rejected": state.rejected,
                "ttrl_rollbacks": state.rollbacks, "ttrl_queries": c.queries, "ttrl_skipped": c.skipped_split + c.skipped_polarised,
                "ttrl_dropped": self.dropped, "ttrl_failed": self.failed, "ttrl_queue": len(self._queue),
                "ttrl_serving_version": getattr(self.serving, "version", 0), "ttrl_error": self.last_error}


def model_identity(model_dir: Path, config) -> str:
    """What a saved state must have been saved for: the weights' digest and the adapter's shape."""
    from pixelis_ros.policy.export_onnx import weights_digest

    return f"{weights_digest(model_dir)[:16]}/lora-r{config.lora_r}"


def torch_folder(policy, model_dir: Path) -> Path:
    """The torch model folder the learner loads: the served folder, or the one an ONNX folder came from."""
    if policy.name != "onnx":
        return model_dir
    source = Path((policy.manifest.get("source") or {}).get("model_dir", ""))
    if not (source / "config.json").is_file():
        from pixelis_ros.policy.base import PolicyError

        raise PolicyError(f"{model_dir}: test-time RL trains in torch, and the torch folder this export came from "
                          f"({source}) is not on this machine; copy it there or serve the torch folder")
    return source


def start_ttrl(policy, model_dir: Path, config, state_dir: Path | None, log=print):
    """(the policy to serve, a started worker) for a node serving ``policy`` from ``model_dir``."""
    from pixelis_ros.policy.hf import load_hf_policy
    from pixelis_ros.ttrl.online import TestTimeRL
    from pixelis_ros.ttrl.serving import SwappablePolicy
    from pixelis_ros.ttrl.state import STATE_FILE, TTRLStateError

    serving = SwappablePolicy(policy, config.lora_r, config.lora_alpha)
    source = torch_folder(policy, Path(model_dir))
    learner_policy = load_hf_policy(source, heads="auto", max_new_tokens=config.max_new_tokens)
    ttrl = TestTimeRL(learner_policy, config)
    model_id = model_identity(source, config)
    state_path = state_dir / STATE_FILE if state_dir is not None else None
    worker = TTRLWorker(ttrl, serving, config, state_path, model_id, log)
    if state_path is not None and state_path.exists():
        try:
            ttrl.restore(state_path, model_id)
            serving.offer(ttrl.counters.version, ttrl.learner.state(TRAINED))
            log(f"test-time RL: restored {state_path} (adapter version {ttrl.counters.version})")
        except TTRLStateError as e:
            worker.last_error = str(e)
            log(f"test-time RL: {e}; serving the base adapter")
    worker.start()
    return serving, worker
