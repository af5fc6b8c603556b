"""The SFT recipe as one typed config: every field documented, loaded from YAML, overridable from
the command line (``pixelis train sft --config R.yaml --set lr=3e-4 --set max_steps=20``).

A bad field is one clear error that names it (``ConfigError``); a zero knob means off and free,
as in TRL: ``lora_r: 0`` trains every weight, ``pointer_weight: 0`` (with the other head weights)
builds no heads, a token weight of ``1.0`` is plain SFT.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe field that is unknown, of the wrong type or out of range; the message names it."""


class DatasetError(ValueError):
    """An export folder or record that cannot be trained on; the message names the file or field.
    (Here, not in ``data``, so the command line can name it without importing torch.)"""


def check_ranges(config, at_least_one=(), non_negative=(), positive=()) -> None:
    """A ConfigError naming the first field of ``config`` out of its range (NaN is out of all)."""
    for names, rule, ok in ((at_least_one, ">= 1", lambda v: v >= 1), (non_negative, ">= 0", lambda v: v >= 0),
                            (positive, "> 0", lambda v: v > 0)):
        for name in names:
            if not ok(getattr(config, name)):
                raise ConfigError(f"{name} must be {rule}, got {getattr(config, name)}")


def check_choice(config, name: str, choices: tuple[str, ...]) -> None:
    if getattr(config, name) not in choices:
        raise ConfigError(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, got {getattr(config, name)!r}")


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning on CoTA traces exported from the simulator (DESIGN §1, phase 1)."""

    model: str
    """Model folder to start from: a ``pixelis model build`` folder or a local Qwen2.5-VL / Qwen3-VL checkpoint."""
    data: str
    """A ``pixelis sim export`` folder (episodes.jsonl, images/)."""
    output_dir: str
    """Where checkpoints (``checkpoint-<step>/``), the final model (``final/``), logs and the loss plot go."""
    max_steps: int = 1000
    """Optimizer steps to train."""
    batch_size: int = 8
    """Episodes per step and process (before gradient accumulation)."""
    grad_accum: int = 1
    """Micro-batches accumulated into one optimizer step."""
    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warm-up steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """The cosine decays to ``lr * min_lr_ratio`` at ``max_steps``."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    seed: int = 0
    """Seed of the data order and of the heads' initialisation."""
    threads: int = 2
    """torch intra-op threads per process (the machines this was tuned on have 2 cores)."""
    mixed_precision: str = "no"
    """accelerate's mixed precision: ``no``, ``bf16`` or ``fp16`` (a GPU)."""
    dtype: str = "float32"
    """Dtype the weights are loaded in: ``float32`` or ``bfloat16`` (an 8B checkpoint with LoRA)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (long 8B episodes on a GPU)."""
    max_episodes: int = 0
    """Train on the first N episodes of the export (0 = all)."""
    max_length: int = 2048
    """Episodes whose tokens exceed this are skipped (counted in the log)."""
    no_tools: bool = False
    """Baseline: train question + image(s) -> answer only (the paper's "same model, no tools")."""
    system_prompt: bool = False
    """Train with the tool-schema system prompt (a released checkpoint needs it; a model trained
    from scratch learns the tools from the traces, 3.6x cheaper). Saved in the prompt profile."""
    first_frame: bool = True
    """Clip episodes show ``frame:0`` beside ``frame:-1`` with the query. Saved in the prompt profile."""
    name_weight: float = 2.0
    """Loss weight of the tokens of a call's operation name (1.0 = plain SFT)."""
    argument_weight: float = 2.0
    """Loss weight of the tokens of a call's ``arguments`` object: keys, boxes, image refs, predicate values."""
    answer_weight: float = 1.0
    """Loss weight of the tokens inside ``<answer>``."""
    pointer_weight: float = 1.0
    """Auxiliary pointer cross-entropy (the image token holding the target's centre); 0 with the
    other head weights = no heads."""
    box_weight: float = 1.0
    """Auxiliary box loss (L1 + ``giou_weight`` * GIoU) of the heads' box against the call's box."""
    giou_weight: float = 1.0
    """Share of GIoU in the box loss."""
    point_weight: float = 1.0
    """Auxiliary point loss (L1) for calls with ``point_2d``."""
    time_weight: float = 1.0
    """Auxiliary time loss (L1, fractions of the clip) for calls with times in seconds."""
    lora_r: int = 0
    """LoRA rank on the language model's projections; 0 = full fine-tuning (the tiny presets)."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path."""
    logging_steps: int = 10
    """Steps between log lines (loss, lr, steps/s) in ``log.jsonl``."""
    save_steps: int = 200
    """Steps between checkpoints (0 = only the final model)."""
    save_total_limit: int = 2
    """Checkpoints kept (older ones are deleted)."""

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("max_steps", "batch_size", "grad_accum", "threads", "max_length", "logging_steps"),
                     non_negative=("warmup_steps", "max_episodes", "save_steps", "save_total_limit", "lora_r", "seed",
                                   "weight_decay", "min_lr_ratio", "max_grad_norm", "name_weight", "argument_weight",
                                   "answer_weight", "pointer_weight", "box_weight", "giou_weight", "point_weight",
                                   "time_weight", "lora_dropout"),
                     positive=("lr",))
        check_choice(self, "mixed_precision", ("no", "bf16", "fp16"))
        check_choice(self, "dtype", ("float32", "bfloat16"))

    @property
    def heads(self) -> bool:
        """Whether auxiliary heads are trained (any head weight above zero, and tools in use)."""
        return not self.no_tools and any(w > 0 for w in (self.pointer_weight, self.box_weight, self.point_weight,
                                                           self.time_weight))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(kind: str, name: str, value: Any, where: str) -> Any:
    """``value`` as the field's type (YAML gives ints for floats, the command line gives strings)."""
    if isinstance(value, str) and kind != "str":
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"{where}: {name}={value!r} is not a value") from None
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{where}: {name} must be {kind}, got {type(value).__name__} {str(value)[:80]!r}")
    return value


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None, cls: type = SFTConfig):
    """The recipe at ``path`` (YAML) with ``overrides`` (``["key=value", ...]`` or a dict) on top, as
    an instance of the config dataclass ``cls`` (``SFTConfig``, ``RFTConfig``). Relative paths in
    the file are relative to the current directory, as on the command line."""
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    where = "--set"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such recipe file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read it ({e})") from None
        try:
            data = yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError) as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0][:200]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe is a YAML mapping of fields, got {type(data).__name__}")
        values.update(data)
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        for item in overrides or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--set {item!r}: use --set field=value")
            values[key.strip()] = value
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; fields: {', '.join(known)}")
    missing = [n for n, f in known.items() if f.default is dataclasses.MISSING and n not in values]
    if missing:
        raise ConfigError(f"{where}: missing required field(s) {missing}")
    return cls(**{k: _coerce(known[k].type, k, v, where) for k, v in values.items()})
