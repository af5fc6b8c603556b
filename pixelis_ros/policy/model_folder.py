"""Checks on a local model folder before any backend loads it: clear errors instead of deep tracebacks.

transformers reports a missing file or a foreign architecture from deep inside ``from_pretrained``
(often as a failed hub lookup, which offline is misleading). ``check_model_folder`` looks at the
files first and raises ``ModelFolderError`` naming the file and the fix. It also enforces the
project's rule that weights are loaded only from safetensors (DESIGN §4.4): a folder holding only
pickle checkpoints (``.bin``/``.pt``) is refused, never unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pixelis_ros.policy.base import PolicyError
from pixelis_ros.policy.presets import ARCHS

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
BUILD_HINT = "build one with `pixelis model build --arch qwen3_vl --preset tiny --out DIR`"


class ModelFolderError(PolicyError):
    """A model folder is missing a file, holds the wrong architecture or unsafe weights."""


@dataclass(frozen=True)
class ModelFolder:
    """What the checks found in a valid folder."""

    path: Path
    """The folder."""
    arch: str
    """``model_type`` from config.json (one of ``presets.ARCHS``)."""
    config: dict
    """config.json as parsed."""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFolderError(f"{path} is not readable JSON ({e}); restore it from the checkpoint or rebuild the "
                               f"folder ({BUILD_HINT})") from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path} must hold a JSON object")
    return data


def _check_weights(path: Path) -> None:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise ModelFolderError(f"{index} names shard(s) missing from the folder: {', '.join(missing)}; copy "
                                   "every model-*.safetensors file of the checkpoint")
        return
    if (path / "model.safetensors").is_file():
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelFolderError(
            f"{path} has only pickle weights ({', '.join(pickles)}); they are refused because unpickling runs code. "
            "Convert them to safetensors on a trusted machine (load the model, then "
            "model.save_pretrained(DIR, safe_serialization=True)) or get the checkpoint's model.safetensors")
    raise ModelFolderError(f"{path / 'model.safetensors'} is missing (nor is there a model.safetensors.index.json "
                           f"with shards); copy the checkpoint's weights or {BUILD_HINT}")


def check_model_folder(path: str | Path) -> ModelFolder:
    """Validate a Qwen2.5-VL / Qwen3-VL checkpoint folder; raise ``ModelFolderError`` if unusable."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"model folder {path} does not exist; give a local checkpoint folder or {BUILD_HINT}")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ModelFolderError(f"{config_path} is missing; a model folder needs the checkpoint's config.json "
                               f"(or {BUILD_HINT})")
    config = _read_json(config_path)
    arch = config.get("model_type")
    if arch not in ARCHS:
        classes = ", ".join(config.get("architectures") or []) or "no architectures listed"
        raise ModelFolderError(f"{config_path} has model_type {arch!r} ({classes}); the torch backend loads "
                               f"Qwen2.5-VL (qwen2_5_vl) or Qwen3-VL (qwen3_vl) checkpoints only")
    _check_weights(path)
    if not (path / "tokenizer.json").is_file() and not ((path / "vocab.json").is_file() and (path / "merges.txt").is_file()):
        raise ModelFolderError(f"{path / 'tokenizer.json'} is missing (nor vocab.json + merges.txt); copy the "
                               "checkpoint's tokenizer files")
    if not (path / "tokenizer_config.json").is_file():
        raise ModelFolderError(f"{path / 'tokenizer_config.json'} is missing; copy it from the checkpoint")
    if not any((path / n).is_file() for n in ("preprocessor_config.json", "processor_config.json")):
        raise ModelFolderError(f"{path / 'preprocessor_config.json'} is missing (nor processor_config.json): the image "
                               "processor cannot be built; copy it from the checkpoint")
    has_template = any((path / n).is_file() for n in ("chat_template.jinja", "chat_template.json"))
    if not has_template and "chat_template" not in _read_json(path / "tokenizer_config.json"):
        raise ModelFolderError(f"{path / 'chat_template.jinja'} is missing (nor chat_template.json); copy the "
                               f"checkpoint's template or TRL's trl/chat_templates/{arch}.jinja there")
    return ModelFolder(path=path, arch=arch, config=config)
