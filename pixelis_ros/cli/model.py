"""``pixelis model ...``: model folder commands, registered on the main parser by
``add_model_commands`` (``pixelis_ros/cli/__init__.py`` calls it).

Same conventions as ``cli/sim.py``: one ``add_<name>(model_sub)`` per command returning a JSON-able
result; ``USAGE_ERRORS`` are bad input (exit status 2, ``{"error": ...}``). Nothing heavy is
imported at the top: this module loads on every ``pixelis`` start.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pixelis_ros.cli.inputs import UsageError
from pixelis_ros.policy.base import PolicyError
from pixelis_ros.policy.corpus import CorpusError
from pixelis_ros.policy.presets import ARCHS, PRESETS, PresetError

USAGE_ERRORS: tuple[type[Exception], ...] = (PresetError, CorpusError, PolicyError)


def clear_out(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` unless ``force``, which empties it: a file left from another model
    (a shard index, an ``adapter_config.json``) would change what ``from_pretrained`` loads."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise UsageError(f"--out {out} is not empty; pass --force to replace its contents")
    shutil.rmtree(out)


def cmd_model_build(args) -> dict:
    from pixelis_ros.policy.builder import build_model

    clear_out(Path(args.out), args.force)
    return build_model(args.arch, args.preset, args.out, corpus=args.corpus, seed=args.seed)


def add_build(model_sub) -> None:
    p = model_sub.add_parser("build", help="build a random-init Qwen-VL model folder offline (HF format)",
                             description="Write a Hugging Face model folder: config from a preset, a BPE tokenizer "
                                         "trained on a CoTA corpus, image processor, chat template, random weights "
                                         "(safetensors) and a model card. Loads offline with from_pretrained.")
    p.add_argument("--arch", required=True, choices=ARCHS, help="backbone family")
    p.add_argument("--preset", required=True, choices=sorted({name for _, name in PRESETS}), help="model size")
    p.add_argument("--out", required=True, help="output folder (new or empty, see --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out: its contents are deleted first")
    p.add_argument("--corpus", help="a simulator export folder (or its episodes.jsonl) to train the tokenizer on "
                                    "(default: traces generated from the CoTA grammar)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and the generated corpus")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_model_build)


MODEL_COMMANDS = [add_build]
"""Subcommand registrars, in help order."""


def add_model_commands(sub) -> None:
    """Add ``model`` and its subcommands to the main parser's subparsers ``sub``."""
    model = sub.add_parser("model", help="model folders: build tiny Qwen-VL models").add_subparsers(dest="model",
                                                                                                  required=True)
    for add in MODEL_COMMANDS:
        add(model)
