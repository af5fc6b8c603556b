"""Checks on an exported ONNX folder before the runtime trusts it: clear errors, not ORT tracebacks.

A folder is usable when manifest.json is ours, every file it names is there with the recorded
size, config.json still has the digest the export recorded (so graphs and tokenizer/processor
come from the same model), and each session's inputs/outputs are the names the runtime feeds.
Every failure names the file and the fix (re-export).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pixelis_ros.policy.base import PolicyError
from pixelis_ros.policy.weights_check import WeightsError, check_links, inside, read_json_file

MANIFEST = "manifest.json"
FORMAT = "pixelis-onnx/1"
ROLES = ("vision", "decoder")
REQUIRED_SIDE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


class OnnxFolderError(PolicyError):
    """An ONNX folder is incomplete, from another model, or not what the runtime expects."""


def _fix(folder: Path) -> str:
    return f"re-export it with `pixelis export onnx --model MODEL_DIR --out {folder}`"


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise OnnxFolderError(f"{folder} is not a folder; export one with `pixelis export onnx --model MODEL_DIR --out {folder}`")
    if not path.is_file():
        raise OnnxFolderError(f"{path} is missing: {folder} is not a pixelis ONNX export; {_fix(folder)}")
    try:
        manifest = read_json_file(path, _fix(folder))
    except WeightsError as e:
        raise OnnxFolderError(str(e)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OnnxFolderError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r} "
                              f"is not {FORMAT!r}; {_fix(folder)}")
    return manifest


def _check_paths(folder: Path, manifest: dict) -> None:
    """Every file the manifest names is inside the folder, and no entry links out of it."""
    check_links(folder, _fix(folder))
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise WeightsError(f"{folder / MANIFEST} has no 'files' object; {_fix(folder)}")
    for role in ROLES:
        entry = files.get(role)
        if entry is None:
            continue
        if not isinstance(entry, dict) or type(entry.get("bytes")) is not int or not isinstance(entry.get("external_data", []), list):
            raise WeightsError(f"{folder / MANIFEST}: the {role} entry is malformed; {_fix(folder)}")
        inside(folder, entry.get("path"), f"{folder / MANIFEST} ({role})", _fix(folder))
        for data in entry.get("external_data", []):
            inside(folder, data, f"{folder / MANIFEST} ({role} external data)", _fix(folder))
    lora = manifest.get("lora") or {}
    if not isinstance(lora, dict):
        raise WeightsError(f"{folder / MANIFEST}: 'lora' must be an object; {_fix(folder)}")
    if lora.get("mode") == "adapters":
        inside(folder, lora.get("adapter_file"), f"{folder / MANIFEST} (lora adapter)", _fix(folder))


def check_onnx_folder(folder: str | Path) -> dict:
    """The manifest of a complete, self-consistent ONNX folder (files present, sizes and config digest match)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    try:
        _check_paths(folder, manifest)
    except WeightsError as e:
        raise OnnxFolderError(str(e)) from None
    for name in REQUIRED_SIDE_FILES:
        if not (folder / name).is_file():
            raise OnnxFolderError(f"{folder / name} is missing (the runtime's tokenizer/processor/config come from the "
                                  f"ONNX folder); {_fix(folder)}")
    digest = hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
    if digest != manifest.get("source", {}).get("config_sha256"):
        raise OnnxFolderError(f"{folder / 'config.json'} does not match {folder / MANIFEST} (config digest differs): "
                              f"the graphs were exported from another model; {_fix(folder)}")
    for role in ROLES:
        entry = manifest.get("files", {}).get(role)
        if not entry:
            raise OnnxFolderError(f"{folder / MANIFEST} names no {role} graph; {_fix(folder)}")
        path = folder / entry["path"]
        if not path.is_file():
            raise OnnxFolderError(f"{path} is missing; {_fix(folder)}")
        if path.stat().st_size != entry["bytes"]:
            raise OnnxFolderError(f"{path} has {path.stat().st_size} bytes, the manifest recorded {entry['bytes']}: "
                                  f"it is not the graph exported with this folder; {_fix(folder)}")
        for data in entry.get("external_data", []):
            if not (folder / data).is_file():
                raise OnnxFolderError(f"{folder / data} (external weights of {path.name}) is missing; {_fix(folder)}")
    lora = manifest.get("lora") or {}
    if lora.get("mode") == "adapters" and not (folder / lora.get("adapter_file", "")).is_file():
        raise OnnxFolderError(f"{folder / lora.get('adapter_file', '?')} (the LoRA adapter exported with the decoder) "
                              f"is missing; convert it again with `pixelis export adapter --onnx {folder} "
                              f"--adapter ADAPTER_DIR --out {folder / lora.get('adapter_file', 'adapter.onnx_adapter')}`")
    return manifest


def check_session_io(folder: Path, role: str, session, manifest: dict) -> None:
    """The session's input/output names are the ones recorded at export (and that the runtime feeds)."""
    entry = manifest["files"][role]
    # inputs with defaults (the LoRA matrices of an adapters export) are listed apart by ONNX Runtime
    inputs = [i.name for i in session.get_inputs()] + [i.name for i in session.get_overridable_initializers()]
    outputs = [o.name for o in session.get_outputs()]
    if inputs != entry["inputs"] or outputs != entry["outputs"]:
        raise OnnxFolderError(f"{folder / entry['path']}: inputs {inputs} / outputs {outputs} differ from the manifest's "
                              f"{entry['inputs']} / {entry['outputs']}; {_fix(folder)}")
