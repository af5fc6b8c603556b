"""``pixelis train bundle``: turn a finished SFT or CC-RFT run into the bundled model folder with its
model card (what it is, what it was trained on, how long it took, the results table). An RFT
run's card keeps the SFT section of the card of the model it started from and adds its own.

The card states plainly that this is a small model trained on the simulator's worlds, not a
general-purpose VLM; a real camera needs a real checkpoint trained with the same recipe on its
own exports.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from pixelis_ros.training.config import ConfigError

KEPT = ("config.json", "generation_config.json", "model.safetensors", "heads.safetensors", "heads_config.json",
        "pixelis_prompt.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json",
        "sft_config.yaml", "rft_config.yaml")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({e})") from None


def _section(card: str, heading: str) -> str:
    """The body of ``## heading`` in a markdown card ('' when absent)."""
    start = card.find(f"## {heading}\n")
    if start < 0:
        return ""
    body = card[start + len(heading) + 4:]
    end = body.find("\n## ")
    return (body if end < 0 else body[:end]).strip()


def _rft_lines(run: Path, final: Path, summary: dict) -> list[str]:
    config = yaml.safe_load((final / "rft_config.yaml").read_text(encoding="utf-8"))
    start = Path(config["model"]) / "README.md"
    sft = _section(start.read_text(encoding="utf-8"), "Training") if start.is_file() else ""
    terms = ", ".join(f"{k} {config[k]}" for k in ("correctness_weight", "acting_weight", "invalid_penalty",
                                                    "curiosity_weight", "coherence_weight", "efficiency_penalty",
                                                    "tool_bonus", "beta"))
    begin, end = summary.get("start", {}), summary.get("end", {})
    return ["## Training, phase 1: SFT", "", sft or f"(the card of {config['model']} says how it was trained)", "",
            "## Training, phase 2: CC-RFT", "",
            f"- started from `{config['model']}` (also the KL anchor); suite `{config['suite']}` from episode "
            f"{config['start_episode']} (scenes SFT never saw)",
            f"- recipe: `training/configs/rft_small.yaml`: {summary['steps']} steps x {config['groups_per_step']} scenes x "
            f"G={config['num_generations']} complete episodes ({summary['rollouts']} rollouts), the pointer's cell "
            f"sampled at temperature {config['pointer_temperature']} and in the loss, lr {config['lr']} (heads "
            f"{config['heads_lr']}); rewards: {terms}",
            f"- wall time on 2 CPU cores: {summary['train_seconds']} s ({summary['train_seconds'] / 60:.1f} min, "
            f"{summary['rollouts_per_s']} rollouts/s), as this run measured it",
            f"- training curves (first -> last {config['collapse_window']}-step window): accuracy {begin.get('accuracy')} -> "
            f"{end.get('accuracy')}, tool-call rate {begin.get('tool_call_rate')} -> {end.get('tool_call_rate')}, "
            f"chain {begin.get('chain')} -> {end.get('chain')}, KL {end.get('kl')} at the end; collapse warnings: "
            f"{len(summary.get('collapse_warnings', []))}",
            "- reproduce: `make rft` (this run), `make rft-table` (its ablations and the table)", ""]


def model_card(run: Path, final: Path, table: str | None, name: str = "pixelis-small") -> str:
    summary = _read_json(run / "summary.json")
    hf = _read_json(final / "config.json")
    text = hf.get("text_config", hf)
    rft = (final / "rft_config.yaml").is_file()
    lines = [
        "---", "library_name: transformers", "pipeline_tag: image-text-to-text", "tags: [pixelis, robotics, ros2, simulator]",
        "---", "", f"# {name}", "",
        "**What it is.** A small Qwen3-VL-architecture model trained from scratch, on a 2-core CPU, on the Pixelis "
        "simulator's generated worlds (tabletop scenes with coloured shapes, signs, a lamp, moving objects)"
        + (" by SFT and then CC-RFT (reinforcement over whole tool chains)" if rft else "") + ". It "
        "answers the simulator's six question families by calling the pixel tools (zoom, OCR, segment, track, "
        "temporal) and grounds its calls through the auxiliary pointer/box heads (`heads.safetensors`, served in "
        "`refine` mode). **It is not a general-purpose VLM**: on real camera images it will write well-formed "
        "tool calls about objects it has never seen. For a real robot, bring a local Qwen3-VL checkpoint (a path) "
        "and train it on your own exports with the same recipe (`training/configs/sft_qwen3_vl_8b.yaml`).", "",
        "## Architecture", "",
        f"- `{hf.get('model_type')}`, hidden {text.get('hidden_size')}, {text.get('num_hidden_layers')} layers, "
        f"vocabulary {text.get('vocab_size')} (byte-level BPE trained on the traces, digits split)",
        f"- prompt profile (`pixelis_prompt.json`): {_read_json(final / 'pixelis_prompt.json')}", "",
    ]
    lines += _rft_lines(run, final, summary) if rft else _sft_lines(run, final, summary)
    if table:
        lines += ["## Results (held-out test suite, `pixelis train table`)", "", table.strip(), ""]
    lines += ["## Limits", "",
              "Trained and evaluated only on simulator renders (640x480, the train suite's lighting and fonts). See the "
              "table's per-family diagnosis for where it fails (tool choice, grounding, reading the observation).", ""]
    return "\n".join(lines)


def _sft_lines(run: Path, final: Path, summary: dict) -> list[str]:
    config = yaml.safe_load((final / "sft_config.yaml").read_text(encoding="utf-8"))
    data = Path(config["data"])
    export = _read_json(data / "timing.json") if (data / "timing.json").is_file() else {}
    manifest = _read_json(data / "manifest.json") if (data / "manifest.json").is_file() else {}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] if (run / "log.jsonl").is_file() else []
    speed = [r["steps_per_s"] for r in log if r.get("steps_per_s")]
    export_s = export.get("seconds")
    total = (export_s or 0) + summary["train_seconds"]
    return [
        "## Training", "",
        f"- data: `pixelis sim export --suite train --episodes {manifest.get('episodes', config.get('max_episodes'))}` "
        f"(suite `train`, seeds from 0; oracle accuracy of the export {manifest.get('oracle_accuracy')}); "
        f"{summary['episodes']} episodes whose expert answered right were imitated "
        f"({summary['skipped_incorrect_expert']} skipped)",
        f"- recipe: `training/configs/sft_small.yaml` ({summary['steps']} steps x batch {config['batch_size']}, "
        f"{summary['epochs']} epochs, lr {config['lr']}, token weights name {config['name_weight']} / arguments "
        f"{config['argument_weight']} / answer {config['answer_weight']}, heads pointer {config['pointer_weight']} / "
        f"box {config['box_weight']})",
        f"- wall time on 2 CPU cores: export {export_s} s + SFT {summary['train_seconds']} s = {total / 60:.1f} min "
        f"(median {sorted(speed)[len(speed) // 2] if speed else '?'} steps/s), as this run measured it: jobs sharing "
        f"the cores slow it, so compare steps/s with `pixelis bench sft`; final loss {summary['final_loss']}",
        "- reproduce: `make model` (export, tokenizer and initial weights, SFT, this folder)", "",
    ]


def bundle(run: str | Path, out: str | Path, table: str | Path | None = None) -> dict:
    run, out = Path(run), Path(out)
    final = run / "final"
    if not (final / "config.json").is_file() or not (run / "summary.json").is_file():
        raise ConfigError(f"{run}: not a finished SFT or RFT run (final/config.json and summary.json are written at the end)")
    table_text = Path(table).read_text(encoding="utf-8") if table else None
    out.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (final / name).is_file() and (final / name).resolve() != (out / name).resolve():
            shutil.copy2(final / name, out / name)
    card = model_card(run, final, table_text, out.name)
    (out / "README.md").write_text(card, encoding="utf-8")
    return {"out": str(out), "files": sorted(p.name for p in out.iterdir()),
            "bytes": sum(p.stat().st_size for p in out.iterdir())}
