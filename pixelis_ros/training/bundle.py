"""``pixelis train bundle``: turn a finished SFT run into the bundled model folder with its model
card (what it is, what it was trained on, how long it took, the results table).

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
        "sft_config.yaml")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({e})") from None


def model_card(run: Path, final: Path, table: str | None) -> str:
    summary = _read_json(run / "summary.json")
    config = yaml.safe_load((final / "sft_config.yaml").read_text(encoding="utf-8"))
    hf = _read_json(final / "config.json")
    text = hf.get("text_config", hf)
    data = Path(config["data"])
    export = _read_json(data / "timing.json") if (data / "timing.json").is_file() else {}
    manifest = _read_json(data / "manifest.json") if (data / "manifest.json").is_file() else {}
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()] if (run / "log.jsonl").is_file() else []
    speed = [r["steps_per_s"] for r in log if r.get("steps_per_s")]
    export_s = export.get("seconds")
    total = (export_s or 0) + summary["train_seconds"]
    lines = [
        "---", "library_name: transformers", "pipeline_tag: image-text-to-text", "tags: [pixelis, robotics, ros2, simulator]",
        "---", "", f"# {final.name if final.name != 'final' else 'pixelis-small'}", "",
        "**What it is.** A small Qwen3-VL-architecture model trained from scratch, on a 2-core CPU, on the Pixelis "
        "simulator's generated worlds (tabletop scenes with coloured shapes, signs, a lamp, moving objects). It "
        "answers the simulator's six question families by calling the pixel tools (zoom, OCR, segment, track, "
        "temporal) and grounds its calls through the auxiliary pointer/box heads (`heads.safetensors`, served in "
        "`refine` mode). **It is not a general-purpose VLM**: on real camera images it will write well-formed "
        "tool calls about objects it has never seen. For a real robot, bring a local Qwen3-VL checkpoint (a path) "
        "and train it on your own exports with the same recipe (`training/configs/sft_qwen3_vl_8b.yaml`).", "",
        "## Architecture", "",
        f"- `{hf.get('model_type')}`, hidden {text.get('hidden_size')}, {text.get('num_hidden_layers')} layers, "
        f"vocabulary {text.get('vocab_size')} (byte-level BPE trained on the traces, digits split)",
        f"- prompt profile (`pixelis_prompt.json`): {_read_json(final / 'pixelis_prompt.json')}",
        "", "## Training", "",
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
    if table:
        lines += ["## Results (held-out test suite, `pixelis train table`)", "", table.strip(), ""]
    lines += ["## Limits", "",
              "Trained and evaluated only on simulator renders (640x480, the train suite's lighting and fonts). See the "
              "table's per-family diagnosis for where it fails (tool choice, grounding, reading the observation).", ""]
    return "\n".join(lines)


def bundle(run: str | Path, out: str | Path, table: str | Path | None = None) -> dict:
    run, out = Path(run), Path(out)
    final = run / "final"
    if not (final / "config.json").is_file() or not (run / "summary.json").is_file():
        raise ConfigError(f"{run}: not a finished SFT run (final/config.json and summary.json are written at the end)")
    table_text = Path(table).read_text(encoding="utf-8") if table else None
    out.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        if (final / name).is_file() and (final / name).resolve() != (out / name).resolve():
            shutil.copy2(final / name, out / name)
    card = model_card(run, final, table_text)
    (out / "README.md").write_text(card, encoding="utf-8")
    return {"out": str(out), "files": sorted(p.name for p in out.iterdir()),
            "bytes": sum(p.stat().st_size for p in out.iterdir())}
