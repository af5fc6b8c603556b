"""The worker's state on disk: adapter, EMA, snapshots, memory, probe set and counters, in one file.

One safetensors file (``ttrl_state.safetensors``; no pickle): tensors for the adapter, the EMA,
the snapshots and every stored image, and one JSON document in the header's metadata for the
rest. It is written atomically — a temporary file in the same folder, flushed and fsynced, then
renamed over the old one, and the folder fsynced — so a process killed at any instant leaves
either the previous state or the new one, never a mix (a test kills a real process mid-save).

``load_state`` refuses, with a ``TTRLStateError`` saying what to do, a file that is truncated or
not ours, a format version it does not know, or state saved for another model or adapter shape;
the caller then serves the base adapter and keeps going.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pixelis_ros.policy.base import PolicyError

STATE_FILE = "ttrl_state.safetensors"
FORMAT = "pixelis-ttrl-state"
VERSION = 1


class TTRLStateError(PolicyError):
    """A saved test-time state that cannot be restored (the message says why and what to do)."""


def _fix(path: Path) -> str:
    return f"delete {path} (or point ttrl_state elsewhere) to start from the base adapter"


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


def save_state(path: str | Path, tensors: dict[str, np.ndarray], document: dict, model_id: str) -> Path:
    """Write ``tensors`` and the JSON ``document`` for the model ``model_id`` atomically."""
    from safetensors.numpy import save

    path = Path(path)
    meta = {"format": FORMAT, "version": str(VERSION), "model": model_id,
            "document": json.dumps(document, separators=(",", ":"), default=float)}
    write_atomically(path, save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta))
    return path


def load_state(path: str | Path, model_id: str) -> tuple[dict[str, np.ndarray], dict]:
    """(tensors, document) of a state file saved for ``model_id``; TTRLStateError otherwise."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TTRLStateError(f"{path}: cannot read the test-time state ({e.strerror or e})") from None
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as e:
        raise TTRLStateError(f"{path}: not a readable state file, truncated or corrupted ({str(e)[:120]}); "
                             f"{_fix(path)}") from None
    if meta.get("format") != FORMAT:
        raise TTRLStateError(f"{path}: not a pixelis test-time state (format {str(meta.get('format'))[:40]!r}); {_fix(path)}")
    if meta.get("version") != str(VERSION):
        raise TTRLStateError(f"{path}: state format version {str(meta.get('version'))[:20]!r}, this build reads "
                             f"{VERSION}; {_fix(path)}")
    if meta.get("model") != model_id:
        raise TTRLStateError(f"{path}: saved for another model ({str(meta.get('model'))[:80]!r}, this one is "
                             f"{model_id!r}); {_fix(path)}")
    try:
        document = json.loads(meta["document"])
    except (KeyError, ValueError) as e:
        raise TTRLStateError(f"{path}: its document is unreadable ({str(e)[:120]}); {_fix(path)}") from None
    return tensors, document
