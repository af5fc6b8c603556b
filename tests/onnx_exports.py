"""Built-and-exported tiny models shared by the ONNX test files (built once per test session)."""

from __future__ import annotations

from pathlib import Path

_CACHE: dict[tuple[str, str], tuple[Path, Path]] = {}


def exported(root: Path, arch: str, preset: str) -> tuple[Path, Path]:
    """(model folder, ONNX folder) of a random-weight preset."""
    from pixelis_ros.policy.builder import build_model
    from pixelis_ros.policy.export_onnx import export_onnx

    key = (arch, preset)
    if key not in _CACHE:
        model = root / f"{arch}-{preset}"
        build_model(arch, preset, model)
        export_onnx(model, root / f"{arch}-{preset}-onnx")
        _CACHE[key] = (model, root / f"{arch}-{preset}-onnx")
    return _CACHE[key]
