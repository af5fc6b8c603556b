"""Shared fixtures. Real-data tests find the shared data folder through ``PIXELIS_REAL_DATA``
(falling back to ``<repo>/../shared/data/real``) and skip, saying where they looked, without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    """Where the real-data samples should be; it may not exist."""
    return Path(os.environ.get("PIXELIS_REAL_DATA") or REPO.parent / "shared" / "data" / "real")


@pytest.fixture
def real_data() -> Path:
    path = real_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder absent: {path} (set PIXELIS_REAL_DATA)")
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-init model folders of both architectures, built once per session (~2 s each)."""
    pytest.importorskip("transformers")
    from pixelis_ros.policy.builder import build_model

    root = tmp_path_factory.mktemp("models")
    return {arch: Path(build_model(arch, "tiny", root / arch)["out"]) for arch in ("qwen2_5_vl", "qwen3_vl")}


@pytest.fixture(scope="session")
def trained(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """Copies of the tiny models trained (memorised, a few seconds) to answer
    ``policy_helpers.messages()`` + ``frame()`` with a zoom call whose box is ``MODEL_BOX`` in the
    backbone's convention."""
    import shutil

    import torch
    from policy_helpers import MODEL_BOX, call_text, frame, memorise, messages

    from pixelis_ros.policy.hf import load_hf_policy

    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_torch_thread below
    try:
        for arch in ("qwen2_5_vl", "qwen3_vl"):
            folder = tmp_path_factory.mktemp(f"trained_{arch}")
            shutil.copytree(tiny_models[arch], folder, dirs_exist_ok=True)
            policy = load_hf_policy(folder)
            memorise(policy, messages(), {"frame:-1": frame()}, call_text(MODEL_BOX[arch]))
            policy.model.save_pretrained(folder)
            out[arch] = folder
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module: two OpenMP threads on a shared 2-core machine spin against
    other jobs (20-25x slower, measured). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
