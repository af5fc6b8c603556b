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
