"""LoRA kept as ONNX Runtime adapters, so a test-time update reaches the runtime without re-export (DESIGN §4.6).

``pixelis export onnx --lora adapters`` exports the decoder with each LoRA-targeted projection
computed as ``W x + (x @ a) @ b`` where ``a``/``b`` are named graph inputs, not weights. The
adapter's current weights go into an ONNX Runtime adapter file (``onnxruntime.AdapterFormat``);
at run time ``RunOptions.add_active_adapter`` feeds them, and with no adapter active the runtime
feeds zeros (the base model, exactly). An updated peft adapter becomes a new adapter file with
``convert_adapter`` (``pixelis export adapter``): a few MB written, no graph touched.

Layout of the graph inputs (recorded in manifest.json, key ``lora``): for the module
``model.language_model.layers.0.self_attn.q_proj``, ``lora.<module>.a`` is peft's ``lora_A``
transposed, ``(in, r)``, and ``lora.<module>.b`` is ``lora_B`` transposed with peft's scaling
(``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA) folded in, ``(r, out)``: the graph needs no
scaling constant, so adapters with another alpha still fit, while rank and targets are part of
the graph's shapes and names and must match. This module needs numpy, safetensors and
onnxruntime only (no torch): the robot side converts and swaps adapters without torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pixelis_ros.policy.base import PolicyError

MODES = ("merged", "adapters")
"""``--lora`` choices: fold the adapter into the weights, or keep it as swappable ORT adapters."""
ADAPTER_FILE = "adapter.onnx_adapter"
"""The adapter exported with the folder (its weights at export time), in ONNX Runtime's format."""
PEFT_PREFIX = "base_model.model."
ADAPTER_VERSION = 1
"""Version of our adapter layout (``a``/``b`` transposed, scaling folded), stamped into each file."""


class AdapterMismatch(PolicyError):
    """A LoRA adapter does not fit an exported decoder (rank, target modules, or model differ)."""


@dataclass(frozen=True)
class PeftLora:
    """A peft LoRA adapter folder, read without torch."""

    folder: Path
    """The adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    rank: int
    """``r`` of the adapter config."""
    alpha: float
    """``lora_alpha`` of the adapter config."""
    scaling: float
    """What peft multiplies ``B A x`` by: ``alpha / r`` (``alpha / sqrt(r)`` with rsLoRA)."""
    target_modules: object
    """The config's ``target_modules`` (a regex string or a list of names), recorded for the user."""
    weights: dict[str, tuple[np.ndarray, np.ndarray]]
    """Module name (as in the base model) -> (lora_A ``(r, in)``, lora_B ``(out, r)``)."""
    base_model_class: str | None = None
    """The model class peft recorded (``auto_mapping``), e.g. ``Qwen3VLForConditionalGeneration``."""


def _peft_fix(folder: Path) -> str:
    return f"save the adapter with peft's save_pretrained (HFPolicy.save_adapter) into {folder}"


def read_peft_adapter(folder: str | Path) -> PeftLora:
    """The adapter's config and A/B matrices; clear errors for what this export cannot represent."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    config_path, weights_path = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not config_path.is_file():
        raise AdapterMismatch(f"{config_path} is missing: the adapter must be a peft LoRA folder; {_peft_fix(folder)}")
    if not weights_path.is_file():
        extra = " (adapter_model.bin is refused: pickle)" if (folder / "adapter_model.bin").is_file() else ""
        raise AdapterMismatch(f"{weights_path} is missing{extra}; {_peft_fix(folder)}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterMismatch(f"{config_path} is not valid JSON ({e}); {_peft_fix(folder)}") from None
    # Variants whose math is not W x + s B A x with one rank and one scaling: merge them instead.
    unsupported = [key for key, bad in (("peft_type", config.get("peft_type", "LORA") != "LORA"),
                                        ("use_dora", bool(config.get("use_dora"))),
                                        ("rank_pattern", bool(config.get("rank_pattern"))),
                                        ("alpha_pattern", bool(config.get("alpha_pattern"))),
                                        ("bias", config.get("bias", "none") != "none"),
                                        ("lora_bias", bool(config.get("lora_bias"))),
                                        ("fan_in_fan_out", bool(config.get("fan_in_fan_out"))),
                                        ("modules_to_save", bool(config.get("modules_to_save")))) if bad]
    if unsupported:
        raise AdapterMismatch(f"{config_path}: {', '.join(unsupported)} cannot be kept as ONNX Runtime adapters "
                              f"(plain LoRA only); export with `--lora merged` instead")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    tensors = load_file(str(weights_path))
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in sorted(tensors):
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")].removeprefix(PEFT_PREFIX)
        b_key = key.replace(".lora_A.weight", ".lora_B.weight")
        if b_key not in tensors:
            raise AdapterMismatch(f"{weights_path} has {key} but no {b_key}; {_peft_fix(folder)}")
        weights[module] = (tensors[key].astype(np.float32), tensors[b_key].astype(np.float32))
    if not weights:
        raise AdapterMismatch(f"{weights_path} holds no lora_A/lora_B weights; {_peft_fix(folder)}")
    base_class = (config.get("auto_mapping") or {}).get("base_model_class")
    return PeftLora(folder, rank, alpha, scaling, config.get("target_modules"), weights, base_class)


def input_names(module: str) -> tuple[str, str]:
    """The decoder's graph inputs for one LoRA-targeted module."""
    return f"lora.{module}.a", f"lora.{module}.b"


def graph_tensors(lora: PeftLora) -> dict[str, np.ndarray]:
    """Graph input name -> value: ``a = A^T`` ``(in, r)``, ``b = scaling * B^T`` ``(r, out)``."""
    out = {}
    for module in sorted(lora.weights):  # the decoder's input order (DecoderGraph gets sorted modules too)
        a, b = lora.weights[module]
        a_name, b_name = input_names(module)
        out[a_name] = np.ascontiguousarray(a.T)
        out[b_name] = np.ascontiguousarray((b * np.float32(lora.scaling)).T)
    return out


def model_version(weights_sha256: str, shapes: dict[str, list[int]]) -> int:
    """A 31-bit stamp of (base weights, adapter input shapes): files converted for another export are refused."""
    digest = hashlib.sha256((weights_sha256 + json.dumps(shapes, sort_keys=True)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def manifest_entry(lora: PeftLora, weights_sha256: str) -> dict:
    """What manifest.json records under ``lora`` for an export in adapters mode."""
    shapes = {name: list(value.shape) for name, value in graph_tensors(lora).items()}
    return {"mode": "adapters", "rank": lora.rank, "alpha": lora.alpha, "scaling": lora.scaling,
            "target_modules": lora.target_modules, "targets": sorted(lora.weights), "inputs": shapes,
            "layout": "a = lora_A^T (in, r); b = scaling * lora_B^T (r, out)", "adapter_file": ADAPTER_FILE,
            "adapter_version": ADAPTER_VERSION, "model_version": model_version(weights_sha256, shapes)}


def _export_fix(onnx_dir: Path) -> str:
    return (f"train the adapter with the exported rank and target modules, or re-export with "
            f"`pixelis export onnx --model MODEL_DIR --adapter ADAPTER_DIR --lora adapters --out {onnx_dir}`")


def adapter_spec(manifest: dict, onnx_dir: Path) -> dict:
    """The manifest's ``lora`` entry of an adapters-mode export; an error naming the fix otherwise."""
    spec = manifest.get("lora") or {}
    if spec.get("mode") != "adapters":
        raise AdapterMismatch(f"{onnx_dir / 'manifest.json'}: the decoder was exported with LoRA "
                              f"{spec.get('mode', 'merged')!r}, so it takes no adapters; re-export with "
                              f"`pixelis export onnx --model MODEL_DIR --adapter ADAPTER_DIR --lora adapters --out {onnx_dir}`")
    return spec


def check_fits(lora: PeftLora, spec: dict, onnx_dir: Path) -> dict[str, np.ndarray]:
    """The adapter's graph tensors, after checking rank, targets and shapes against the export."""
    where = lora.folder / "adapter_model.safetensors"
    architectures = json.loads((onnx_dir / "config.json").read_text()).get("architectures") or []
    if lora.base_model_class and architectures and lora.base_model_class not in architectures:
        raise AdapterMismatch(f"{lora.folder / 'adapter_config.json'}: the adapter was trained on a "
                              f"{lora.base_model_class}, {onnx_dir} holds a {architectures[0]}; {_export_fix(onnx_dir)}")
    if lora.rank != spec["rank"]:
        raise AdapterMismatch(f"{where}: rank {lora.rank}, but {onnx_dir} was exported for rank {spec['rank']}; "
                              f"{_export_fix(onnx_dir)}")
    if sorted(lora.weights) != spec["targets"]:
        missing = sorted(set(spec["targets"]) - set(lora.weights))
        extra = sorted(set(lora.weights) - set(spec["targets"]))
        raise AdapterMismatch(f"{where}: its target modules differ from the export's (missing {missing[:3]}"
                              f"{'...' if len(missing) > 3 else ''}, extra {extra[:3]}{'...' if len(extra) > 3 else ''}); "
                              f"{_export_fix(onnx_dir)}")
    tensors = graph_tensors(lora)
    for name, value in tensors.items():
        if list(value.shape) != spec["inputs"][name]:
            raise AdapterMismatch(f"{where}: {name} has shape {list(value.shape)}, the export expects "
                                  f"{spec['inputs'][name]} (an adapter of another model); {_export_fix(onnx_dir)}")
    return tensors


def write_ort_adapter(tensors: dict[str, np.ndarray], path: Path, version: int) -> Path:
    import onnxruntime as ort

    fmt = ort.AdapterFormat()
    fmt.set_adapter_version(ADAPTER_VERSION)
    fmt.set_model_version(version)
    fmt.set_parameters({k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt.export_adapter(str(path))
    return path


def convert_adapter(onnx_dir: str | Path, adapter_dir: str | Path, out: str | Path) -> dict:
    """A peft adapter folder -> an ONNX Runtime adapter file for the export in ``onnx_dir``."""
    from pixelis_ros.policy.onnx_folder import check_onnx_folder

    onnx_dir, out = Path(onnx_dir), Path(out)
    spec = adapter_spec(check_onnx_folder(onnx_dir), onnx_dir)
    lora = read_peft_adapter(adapter_dir)
    write_ort_adapter(check_fits(lora, spec, onnx_dir), out, spec["model_version"])
    return {"out": str(out), "parameters": len(spec["inputs"]), "rank": lora.rank, "alpha": lora.alpha,
            "scaling": lora.scaling, "model_version": spec["model_version"]}


def check_ort_adapter(path: Path, spec: dict, onnx_dir: Path) -> None:
    """An ONNX Runtime adapter file fits the export: our layout version, its model stamp, names and shapes."""
    import onnxruntime as ort

    fix = (f"convert the peft adapter for this export with "
           f"`pixelis export adapter --onnx {onnx_dir} --adapter ADAPTER_DIR --out {path}`")
    if not path.is_file():
        raise AdapterMismatch(f"{path} is missing; {fix}")
    try:
        fmt = ort.AdapterFormat.read_adapter(str(path))
    except Exception as e:  # ORT raises its own types for a file that is not an adapter
        raise AdapterMismatch(f"{path} is not an ONNX Runtime adapter file ({e}); {fix}") from None
    if fmt.get_adapter_version() != ADAPTER_VERSION or fmt.get_model_version() != spec["model_version"]:
        raise AdapterMismatch(f"{path} was converted for another export (model version {fmt.get_model_version()}, "
                              f"this export's is {spec['model_version']}); {fix}")
    shapes = {name: list(value.shape()) for name, value in fmt.get_parameters().items()}
    if shapes != spec["inputs"]:
        raise AdapterMismatch(f"{path}: its parameters do not match the export's LoRA inputs; {fix}")
