"""Checks on a local model folder before any backend loads it: clear errors instead of deep tracebacks.

transformers reports a missing file or a foreign architecture from deep inside ``from_pretrained``
(often as a failed hub lookup, which offline is misleading). ``check_model_folder`` looks at the
files first and raises ``ModelFolderError`` naming the file and the fix. It also enforces the
project's rule that weights are loaded only from safetensors (DESIGN §4.4): a folder holding only
pickle checkpoints (``.bin``/``.pt``) is refused, never unpickled. ``weights_check`` reads the
safetensors headers, the weight index and tokenizer.json so that corrupt files, links out of the
folder and configs whose sizes disagree with the weights (a 100,000-layer config over two layers of
weights) are refused before transformers builds anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pixelis_ros.policy.base import PolicyError
from pixelis_ros.policy import weights_check as W
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
        data = W.read_json_file(path, f"restore it from the checkpoint or rebuild the folder ({BUILD_HINT})")
    except W.WeightsError as e:
        raise ModelFolderError(str(e)) from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path} must hold a JSON object")
    return data


def _check_weights(path: Path) -> None:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = [p.name for p in W.weight_files(path, _FIX)]
        except W.WeightsError as e:
            raise ModelFolderError(str(e)) from None
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


REMOVED_CLASSES = {"Qwen2_5_VLImageProcessor": "Qwen2VLImageProcessor"}
"""Image processor classes early releases named that transformers (>= 4.49) no longer has: Qwen
renamed it in its own Qwen2.5-VL folders in February 2025, but copies and fine-tunes saved before
still carry the old name, and transformers then fails with "Unrecognized image processor"."""


PROCESSOR_SIZES = {"patch_size": 1024, "merge_size": 64, "temporal_patch_size": 64, "min_pixels": 2**31,
                   "max_pixels": 2**31, "shortest_edge": 2**31, "longest_edge": 2**31}
"""The image processor's size fields and a bound each: the model's resize rule is computed from
them, so a zero, a string or null there fails every image later (in ``coords``), not here."""


def _check_processor_sizes(path: Path) -> None:
    for name in ("preprocessor_config.json", "processor_config.json"):
        if not (path / name).is_file():
            continue
        data = _read_json(path / name)
        image = data.get("image_processor", data)
        if not isinstance(image, dict):
            raise ModelFolderError(f"{path / name}: image_processor must be an object; {_FIX}")
        if "size" in image and image["size"] is not None and not isinstance(image["size"], dict):
            raise ModelFolderError(f"{path / name}: size must be an object of shortest_edge and longest_edge, got "
                                   f"{W._short(image['size'])}; {_FIX}")
        fields = dict(image) | (image["size"] if isinstance(image.get("size"), dict) else {})
        for key, bound in PROCESSOR_SIZES.items():
            if key in fields and fields[key] is not None and (type(fields[key]) is not int or not 1 <= fields[key] <= bound):
                raise ModelFolderError(f"{path / name}: {key} must be an integer in 1..{bound}, got "
                                       f"{W._short(fields[key])}; {_FIX}")
        for key in ("patch_size", "merge_size"):
            if key in fields and fields[key] is None:
                raise ModelFolderError(f"{path / name}: {key} is null; it must be a positive integer; {_FIX}")


def _check_processor_class(path: Path) -> None:
    if not path.is_file():
        return
    named = _read_json(path).get("image_processor_type")
    if named in REMOVED_CLASSES:
        raise ModelFolderError(f"{path} names image_processor_type {named!r}, a class transformers no longer has; "
                               f"set it to {REMOVED_CLASSES[named]!r}, as Qwen did in its released folders")


_FIX = f"copy the checkpoint's files again or {BUILD_HINT}"


def _check_contents(path: Path, config: dict) -> None:
    """Links, safetensors headers, config sizes against the weights, tokenizer ids against the vocabulary."""
    try:
        W.check_links(path, _FIX)
        tensors: dict = {}
        for file in W.weight_files(path, _FIX):
            tensors.update(W.read_header(file, _FIX))
        W.check_sizes(path / "config.json", config, tensors, _FIX)
        text = config.get("text_config", config)
        if (path / "tokenizer.json").is_file() and type(text.get("vocab_size")) is int:
            top = W.max_token_id(path / "tokenizer.json", _FIX)
            if top is not None and top >= text["vocab_size"]:
                raise W.WeightsError(f"{path / 'tokenizer.json'} defines token id {top} but config.json's vocab_size "
                                     f"is {text['vocab_size']} (the embedding has no row for it): the tokenizer is "
                                     f"not this checkpoint's; {_FIX}")
    except W.WeightsError as e:
        raise ModelFolderError(str(e)) from None


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
    _read_json(path / "tokenizer_config.json")  # a JSON object, or our error naming it
    if not any((path / n).is_file() for n in ("preprocessor_config.json", "processor_config.json")):
        raise ModelFolderError(f"{path / 'preprocessor_config.json'} is missing (nor processor_config.json): the image "
                               "processor cannot be built; copy it from the checkpoint")
    _check_processor_class(path / "preprocessor_config.json")
    _check_processor_sizes(path)
    _check_contents(path, config)
    has_template = any((path / n).is_file() for n in ("chat_template.jinja", "chat_template.json"))
    if not has_template and "chat_template" not in _read_json(path / "tokenizer_config.json"):
        raise ModelFolderError(f"{path / 'chat_template.jinja'} is missing (nor chat_template.json); copy the "
                               f"checkpoint's template or TRL's trl/chat_templates/{arch}.jinja there")
    return ModelFolder(path=path, arch=arch, config=config)
