"""``pixelis train sft --check``: validate a recipe without weights or training.

What can go wrong hours into a multi-GPU run is checked in seconds here: the recipe's fields
(already typed by ``load_config``), the model folder's config (architecture known, sizes, the
parameter count from a meta-device build — no weights read), the LoRA targets matching modules
of that architecture, the data folder's records, and the accelerate configs under
``training/accelerate/``. Missing weights or data are reported, not fatal: the point is to check
a recipe on a machine that does not hold them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from pixelis_ros.training.config import ConfigError, SFTConfig

ACCELERATE_DIR = Path(__file__).resolve().parents[2] / "training" / "accelerate"
ACCELERATE_KEYS = ("distributed_type", "num_processes", "mixed_precision")


def _model_report(config) -> dict:
    from pixelis_ros.policy.presets import ARCHS

    folder = Path(config.model)
    path = folder / "config.json"
    if not path.is_file():
        return {"folder": str(folder), "config": "missing (config.json is needed to check sizes)"}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    arch = raw.get("model_type")
    if arch not in ARCHS:
        raise ConfigError(f"{path}: model_type {arch!r} is not one of {', '.join(ARCHS)}")
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    hf_config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(hf_config)
    from pixelis_ros.policy.hf import LORA_TARGETS

    lora_modules = [n for n, _ in model.named_modules() if re.fullmatch(LORA_TARGETS, n)]
    if config.lora_r and not lora_modules:
        raise ConfigError(f"{config.model}: no module matches the LoRA targets {LORA_TARGETS}")
    weights = sorted(p.name for p in folder.glob("*.safetensors"))
    text = hf_config.get_text_config()
    return {"folder": str(folder), "arch": arch, "parameters": sum(p.numel() for p in model.parameters()),
            "hidden_size": text.hidden_size, "layers": text.num_hidden_layers,
            "lora_modules": len(lora_modules) if config.lora_r else 0,
            "weights": weights or "missing (no *.safetensors: needed to train, not to check)"}


def _data_report(config: SFTConfig) -> dict:
    from pixelis_ros.training.data import read_records

    if not Path(config.data).is_dir():
        return {"folder": config.data, "episodes": "missing (export it with `pixelis sim export`)"}
    records = read_records(config.data, config.max_episodes)
    return {"folder": config.data, "episodes": len(records),
            "expert_correct": sum(bool(r["expert_correct"]) for r in records)}


def _accelerate_report() -> dict:
    out = {}
    for path in sorted(ACCELERATE_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        missing = [k for k in ACCELERATE_KEYS if not isinstance(data, dict) or k not in data]
        if missing:
            raise ConfigError(f"{path}: lacks {missing}")
        out[path.name] = {k: data[k] for k in ACCELERATE_KEYS}
    return out


def check_recipe(config: SFTConfig) -> dict:
    if config.dtype == "bfloat16" and config.lora_r == 0:
        raise ConfigError("dtype bfloat16 with lora_r 0 trains every weight in bf16; use LoRA or float32")
    return {"ok": True, "config": config.to_dict(), "model": _model_report(config), "data": _data_report(config),
            "accelerate": _accelerate_report(), "heads": config.heads}


def check_rft_recipe(config) -> dict:
    """``pixelis train rft --check``: the RFT recipe's fields, its SFT model folder (sizes, LoRA
    targets, heads), the simulator suite its prompts come from and the accelerate configs."""
    from pixelis_ros.sim.suites import SuiteError, load_suite

    try:
        suite = load_suite(config.suite)
    except SuiteError as e:
        raise ConfigError(f"suite: {e}") from None
    if suite.name == "test":
        raise ConfigError("suite: the test suite scores the table; train on another (train)")
    folder = Path(config.model)
    heads = (folder / "heads.safetensors").is_file() or (bool(config.adapter) and (Path(config.adapter) / "heads.safetensors").is_file())
    adapter = None
    if config.adapter:
        adapter = config.adapter if (Path(config.adapter) / "adapter_config.json").is_file() else \
            f"missing ({config.adapter}: the SFT run's adapter folder is needed to train)"
    return {"ok": True, "config": config.to_dict(), "model": _model_report(config), "adapter": adapter,
            "heads": heads if folder.is_dir() else "missing (the SFT model folder is needed to train)",
            "suite": {"name": suite.name, "episodes_used": config.max_steps * config.groups_per_step,
                      "start_episode": config.start_episode},
            "accelerate": _accelerate_report()}
