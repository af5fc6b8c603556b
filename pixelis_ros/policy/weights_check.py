"""A model folder's weights and sizes checked from file headers, before transformers builds anything.

transformers trusts a folder: a truncated or random ``model.safetensors`` fails deep in the
safetensors reader, a config whose sizes disagree with the weights fails with a torch
``size mismatch`` after the whole model is built, and ``num_hidden_layers: 100000`` builds
100,000 layers (minutes) before noticing the weights hold two. A weight index may name shards
anywhere (``../../x``) and a weight file may be a symlink to another folder. These checks read
only the safetensors headers (a few KB) and config.json, and raise ``ModelFolderError`` naming the
folder, the file and the fix. They cover what the two supported Qwen-VL layouts share; anything
stranger still fails inside transformers, where the node turns it into its own error.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

from pixelis_ros.policy.base import PolicyError

MAX_HEADER_BYTES = 100 * 1024 * 1024
"""safetensors caps its JSON header at 100 MB itself; a longer claimed header is a broken file."""
MAX_JSON_BYTES = 64 * 1024 * 1024
"""Largest config/tokenizer/index JSON read (Qwen's tokenizer.json is 11 MB)."""
MAX_PARAMETERS = 100_000_000_000
"""Most parameters a folder may hold (the weight headers' sum): above any Qwen-VL this node can
serve on one machine, so a larger claim is a forged header, not a model."""
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
# Size fields of config.json (top level, text_config or vision_config) and the largest value any
# real checkpoint uses, with room: above these a config is broken or a bomb.
SIZE_BOUNDS = {"num_hidden_layers": 1024, "hidden_size": 65536, "vocab_size": 4_194_304, "intermediate_size": 262_144,
               "num_attention_heads": 1024, "num_key_value_heads": 1024, "head_dim": 4096, "depth": 1024,
               "max_position_embeddings": 16_777_216, "out_hidden_size": 65536, "num_heads": 1024, "patch_size": 1024}
TOKENIZER_MODELS = ("BPE", "WordPiece", "WordLevel", "Unigram")
_TEXT_LAYER = re.compile(r"(?:^|\.)(?:language_model\.|model\.)(?:layers)\.(\d+)\.")
_VISION_BLOCK = re.compile(r"(?:^|\.)visual\.blocks\.(\d+)\.")


class WeightsError(PolicyError):
    """Raised here; ``model_folder`` re-raises it as ``ModelFolderError``."""


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def read_json_file(path: Path, fix: str):
    """A JSON file's content; WeightsError (naming the file and ``fix``) if unreadable."""
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise WeightsError(f"{path} has {size} bytes, more than the {MAX_JSON_BYTES} a model folder's JSON may; {fix}")
        return json.loads(path.read_bytes().decode("utf-8"))
    except RecursionError:
        raise WeightsError(f"{path} nests too deeply to be a model file; {fix}") from None
    except UnicodeDecodeError as e:
        raise WeightsError(f"{path} is not UTF-8 (byte offset {e.start}); {fix}") from None
    except ValueError as e:
        raise WeightsError(f"{path} is not valid JSON ({_short(str(e), 120)}); {fix}") from None
    except OSError as e:
        raise WeightsError(f"{path} cannot be read ({e.strerror or e}); {fix}") from None


def inside(folder: Path, name, what: str, fix: str) -> Path:
    """``folder/name`` when it is a file that resolves inside ``folder`` (no ``..``, no symlink out)."""
    if not isinstance(name, str) or not name or "\0" in name or len(name) > 1024:
        raise WeightsError(f"{what} names {_short(name)}, not a file name; {fix}")
    path = folder / name
    root = folder.resolve()
    if Path(name).is_absolute() or root not in path.resolve().parents:
        raise WeightsError(f"{what} names {_short(name)}, which is outside {folder}; a model folder's files must be "
                           f"inside it (copy the file in, do not link to it); {fix}")
    return path


def check_links(folder: Path, fix: str) -> None:
    """Refuse any entry of the folder that is a symlink resolving outside it."""
    root = folder.resolve()
    for entry in folder.iterdir():
        if entry.is_symlink() and root not in entry.resolve().parents:
            raise WeightsError(f"{entry} is a link to {_short(str(entry.resolve()), 200)}, outside {folder}; a model folder "
                               f"must hold its own files (copy the file in place of the link); {fix}")


def weight_files(folder: Path, fix: str) -> list[Path]:
    """The safetensors files the folder loads: the index's shards, else model.safetensors."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return [folder / "model.safetensors"]
    data = read_json_file(index, fix)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise WeightsError(f"{index} holds no 'weight_map' object of tensor name -> shard file; {fix}")
    shards = sorted({v for v in weight_map.values() if isinstance(v, str)})
    if len(shards) != len(set(map(repr, weight_map.values()))) or not shards:
        raise WeightsError(f"{index}: every 'weight_map' value must be a shard file name; {fix}")
    return [inside(folder, s, str(index), fix) for s in shards]


def read_header(path: Path, fix: str) -> dict[str, tuple[str, list[int]]]:
    """tensor name -> (dtype, shape) from a safetensors header, every offset checked against the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise WeightsError(f"{path} has {size} bytes, too few for a safetensors file; {fix}")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise WeightsError(f"{path} claims a {n}-byte header in a {size}-byte file: truncated or not "
                                   f"safetensors; {fix}")
            raw = f.read(n)
    except OSError as e:
        raise WeightsError(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (RecursionError, UnicodeDecodeError, ValueError):
        raise WeightsError(f"{path} has no readable safetensors header (random bytes or a truncated file); {fix}") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: its safetensors header is not a JSON object; {fix}")
    data_bytes = size - 8 - n
    tensors: dict[str, tuple[str, list[int]]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        ok = (dtype in _DTYPE_BYTES and isinstance(shape, list) and all(type(d) is int and 0 <= d < 2**40 for d in shape)
              and isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets))
        if not ok or not 0 <= offsets[0] <= offsets[1] <= data_bytes \
                or offsets[1] - offsets[0] != math.prod(shape) * _DTYPE_BYTES[dtype]:
            raise WeightsError(f"{path}: tensor {_short(name)} has a broken entry ({_short(entry, 160)}) for "
                               f"{data_bytes} bytes of data: truncated or corrupt; {fix}")
        tensors[name] = (dtype, shape)
    return tensors


def check_sizes(config_path: Path, config: dict, tensors: dict[str, tuple[str, list[int]]], fix: str) -> None:
    """config.json's size fields bounded, typed and agreeing with the weights' shapes."""
    text = config.get("text_config", config)
    vision = config.get("vision_config")
    for section, name in ((config, "config"), (text, "text_config"), (vision, "vision_config")):
        if section is not None and not isinstance(section, dict):
            raise WeightsError(f"{config_path}: {name} must be an object, got {_short(section)}; {fix}")
        for key, bound in SIZE_BOUNDS.items():
            if isinstance(section, dict) and key in section:
                value = section[key]
                if type(value) is not int or not 1 <= value <= bound:
                    raise WeightsError(f"{config_path}: {name}.{key} must be an integer in 1..{bound}, got "
                                       f"{_short(value)}; {fix}")
    total = sum(math.prod(shape) for _, shape in tensors.values())
    if total > MAX_PARAMETERS:
        raise WeightsError(f"the weights claim {total} parameters, more than the {MAX_PARAMETERS} cap; {fix}")
    layers = {int(m.group(1)) for k in tensors if (m := _TEXT_LAYER.search(k)) and "visual" not in k}
    blocks = {int(m.group(1)) for k in tensors if (m := _VISION_BLOCK.search(k))}
    expect = [("text_config.num_hidden_layers", text.get("num_hidden_layers"), layers, "decoder layers")]
    if isinstance(vision, dict):
        expect.append(("vision_config.depth", vision.get("depth"), blocks, "vision blocks"))
    for key, want, found, what in expect:
        if want is not None and found and want != len(found):
            raise WeightsError(f"{config_path}: {key} is {want} but the weights hold {len(found)} {what}: the config "
                               f"is not this checkpoint's; {fix}")
    embed = next((shape for k, (_, shape) in tensors.items() if k.endswith("embed_tokens.weight")), None)
    want = [text.get("vocab_size"), text.get("hidden_size")]
    if embed is not None and None not in want and embed != want:
        raise WeightsError(f"{config_path}: vocab_size x hidden_size is {want[0]} x {want[1]} but the weights' "
                           f"embed_tokens is {embed[0]} x {embed[1]}: the config is not this checkpoint's; {fix}")
    mlp = next((shape for k, (_, shape) in tensors.items() if _TEXT_LAYER.search(k) and k.endswith("mlp.gate_proj.weight")
                and "visual" not in k), None)
    if mlp is not None and text.get("intermediate_size") is not None and mlp[0] != text["intermediate_size"]:
        raise WeightsError(f"{config_path}: text_config.intermediate_size is {text['intermediate_size']} but the "
                           f"weights' mlp.gate_proj has {mlp[0]} rows; {fix}")


def max_token_id(tokenizer_path: Path, fix: str) -> int | None:
    """The largest token id tokenizer.json defines (vocabulary and added tokens)."""
    data = read_json_file(tokenizer_path, fix)
    model = data.get("model") if isinstance(data, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, dict) or model.get("type") not in TOKENIZER_MODELS:
        raise WeightsError(f"{tokenizer_path} holds no model of a known type ({', '.join(TOKENIZER_MODELS)}) with a "
                           f"vocab mapping: not a tokenizers file, or a broken one; {fix}")
    if not isinstance(data.get("added_tokens", []), list):
        raise WeightsError(f"{tokenizer_path}: added_tokens must be a list; {fix}")
    ids = [v for v in vocab.values() if type(v) is int]
    added = data.get("added_tokens") or []
    ids += [t.get("id") for t in added if isinstance(t, dict) and type(t.get("id")) is int]
    if len(ids) != len(vocab) + len(added) or any(i < 0 for i in ids):
        raise WeightsError(f"{tokenizer_path}: token ids must be non-negative integers; {fix}")
    return max(ids, default=None)
