"""``pixelis train sft``: supervised fine-tuning on simulator CoTA traces, a short loop of ours on
accelerate (DESIGN §4.7: the token weights and the heads' losses are ours; the HF Trainer would
only hide them).

Read top to bottom: load the model folder (and LoRA when ``lora_r > 0``) and fresh heads; build
examples from the export with the prompt profile this model will be served with; AdamW with
warm-up and cosine decay; each step is one forward per episode (every assistant turn in context)
and the objective of ``losses``. Multi-process through ``accelerate launch`` (DDP; each process
takes every world-size-th episode of the epoch's permutation, so the data order depends only on
the seed). ``--resume`` continues from the newest ``checkpoint-<step>/`` exactly where it left
off. ``final/`` is a model folder like any other: weights as safetensors, tokenizer, processor,
chat template, ``heads.safetensors``, the prompt profile and a model card; it loads with
``load_policy("torch", DIR, heads="refine")`` and exports with ``pixelis export onnx``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
import yaml

from pixelis_ros.policy.model_folder import check_model_folder
from pixelis_ros.policy.profile import PromptProfile
from pixelis_ros.training.config import SFTConfig
from pixelis_ros.training.data import SFTExamples, collate

STATE_FILE = "trainer_state.json"
COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                "added_tokens.json", "chat_template.jinja", "chat_template.json", "processor_config.json",
                "preprocessor_config.json", "video_preprocessor_config.json", "generation_config.json")


def lr_lambda(config: SFTConfig):
    def f(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def load_backbone(config: SFTConfig):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards": ours is the training bar
    folder = check_model_folder(config.model)
    processor = AutoProcessor.from_pretrained(config.model, local_files_only=True)
    dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(config.model, local_files_only=True, use_safetensors=True, dtype=dtype)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if config.lora_r:
        from peft import LoraConfig, get_peft_model

        from pixelis_ros.policy.hf import LORA_TARGETS, peft_wrapping

        with peft_wrapping():
            model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                                     lora_dropout=config.lora_dropout, target_modules=LORA_TARGETS))
    return folder.arch, processor, model


def make_heads(config: SFTConfig, model):
    if not config.heads:
        return None
    from pixelis_ros.policy.heads import GroundingHeads
    from pixelis_ros.policy.heads_numpy import HeadsConfig

    torch.manual_seed(config.seed)
    return GroundingHeads(HeadsConfig(hidden_size=model.config.get_text_config().hidden_size))


def epoch_order(n: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n, generator=g).tolist()[rank::world]


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = sorted((p for p in output_dir.glob("checkpoint-*") if (p / STATE_FILE).is_file()),
                   key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def train(config: SFTConfig, resume: bool = False, progress: bool = True) -> dict:
    """Run the recipe; returns the summary written to ``output_dir/summary.json``."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed

    from pixelis_ros.progress import progress as progress_bar

    torch.set_num_threads(config.threads)
    # Heads a batch has no target for (point, time) get no gradient: DDP must be told. Without a
    # GPU, processes started by torchrun / accelerate join over gloo (cpu=True).
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision=config.mixed_precision,
                              cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    set_seed(config.seed)
    out = Path(config.output_dir)
    arch, processor, backbone = load_backbone(config)
    profile = PromptProfile(system_prompt=config.system_prompt, first_frame=config.first_frame,
                            heads="refine" if config.heads else "off")
    data = SFTExamples(config.data, processor, arch, profile, no_tools=config.no_tools, name_weight=config.name_weight,
                       argument_weight=config.argument_weight, answer_weight=config.answer_weight,
                       max_episodes=config.max_episodes)
    heads = make_heads(config, backbone)
    from pixelis_ros.training.losses import SFTModel

    model = SFTModel(backbone, heads)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    step, epoch, cursor, history = 0, 0, 0, []
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint-<step>/ with {STATE_FILE} under {out}")
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / STATE_FILE).read_text())
        step, epoch, cursor, history = state["step"], state["epoch"], state["cursor"], state["history"]
    weights = {"pointer": config.pointer_weight, "box": config.box_weight, "point": config.point_weight,
               "time": config.time_weight, "giou": config.giou_weight}
    pad_id = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else 0
    merge = processor.image_processor.merge_size
    rank, world = accelerator.process_index, accelerator.num_processes
    bar = progress_bar(total=config.max_steps, initial=step, desc="sft",
                       enabled=None if progress and accelerator.is_main_process else False)
    t_start, step_t0, skipped, samples = time.monotonic(), time.monotonic(), 0, 0
    window: list[dict] = []
    model.train()
    order = epoch_order(len(data), epoch, config.seed, rank, world)
    while step < config.max_steps:
        for _ in range(config.grad_accum):
            if cursor + config.batch_size > len(order):
                epoch, cursor = epoch + 1, 0
                order = epoch_order(len(data), epoch, config.seed, rank, world)
            examples = [data[i] for i in order[cursor:cursor + config.batch_size]]
            cursor += config.batch_size
            kept = [e for e in examples if len(e.input_ids) <= config.max_length]
            skipped += len(examples) - len(kept)
            if not kept:
                continue
            batch = collate(kept, pad_id, merge)
            batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with accelerator.accumulate(model):
                loss, parts = model(batch, weights)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            samples += len(kept)
            window.append(parts | {"loss": float(loss.detach())})
        step += 1
        bar.update(1)
        if step % config.logging_steps == 0 or step == config.max_steps:
            elapsed = time.monotonic() - step_t0
            row = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                   "steps_per_s": round(config.logging_steps / elapsed, 3) if elapsed > 0 else None,
                   "samples_per_s": round(samples * world / elapsed, 3) if elapsed > 0 else None}
            for key in sorted({k for w in window for k in w}):
                vals = [w[key] for w in window if key in w]
                row[key] = round(sum(vals) / len(vals), 5)
            history.append(row)
            window, samples, step_t0 = [], 0, time.monotonic()
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}", it_s=row["steps_per_s"])
            if accelerator.is_main_process:
                out.mkdir(parents=True, exist_ok=True)
                with open(out / "log.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
        if config.save_steps and step % config.save_steps == 0 and step < config.max_steps:
            save_checkpoint(accelerator, out, config, step, epoch, cursor, history)
    bar.close()
    accelerator.wait_for_everyone()
    summary = {"steps": step, "epochs": round(step * config.batch_size * config.grad_accum * world / max(1, len(data)), 3),
               "episodes": len(data), "skipped_incorrect_expert": data.skipped_incorrect, "skipped_too_long": skipped,
               "processes": world, "train_seconds": round(time.monotonic() - t_start, 1),
               "final_loss": history[-1]["loss"] if history else None}
    if accelerator.is_main_process:
        final = save_final(accelerator.unwrap_model(model), processor, config, profile, out / "final")
        summary["final"] = str(final)
        plot_losses(history, out / "loss.png")
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    return summary


def save_checkpoint(accelerator, out: Path, config: SFTConfig, step: int, epoch: int, cursor: int, history: list) -> None:
    ckpt = out / f"checkpoint-{step}"
    accelerator.save_state(str(ckpt), safe_serialization=True)
    if accelerator.is_main_process:
        (ckpt / "sft_config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        (ckpt / STATE_FILE).write_text(json.dumps({"step": step, "epoch": epoch, "cursor": cursor, "history": history}))
        old = sorted((p for p in out.glob("checkpoint-*") if p != ckpt), key=lambda p: int(p.name.split("-")[1]))
        for p in old[:max(0, len(old) - config.save_total_limit + 1)]:
            shutil.rmtree(p, ignore_errors=True)
    accelerator.wait_for_everyone()


def save_final(model, processor, config: SFTConfig, profile: PromptProfile, final: Path) -> Path:
    """A servable folder: the whole model for full fine-tuning, or (LoRA) a peft adapter folder to
    load on the base (``load_policy("torch", BASE, adapter=DIR)``); tokenizer/processor files,
    heads, prompt profile and recipe beside it."""
    return save_model_folder(model.backbone, model.heads, Path(config.model), profile, final,
                             {"sft_config.yaml": config.to_dict()})


def save_model_folder(backbone, heads, source: Path, profile: PromptProfile, folder: Path, recipes: dict) -> Path:
    """``backbone`` (peft saves only its adapter; None: already saved) and ``heads`` as a model
    folder, with the tokenizer/processor files of ``source``, the prompt profile and each
    ``{file name: recipe}``."""
    from pixelis_ros.policy.heads import save_heads

    folder.mkdir(parents=True, exist_ok=True)
    if backbone is not None:
        backbone.save_pretrained(str(folder), safe_serialization=True)
    for name in COPIED_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, folder / name)
    if heads is not None:
        save_heads(heads, folder)
    profile.save(folder)
    for name, recipe in recipes.items():
        (folder / name).write_text(yaml.safe_dump(recipe, sort_keys=False))
    return folder


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [h["step"] for h in history]
    for key in ("loss", "lm", "pointer", "box"):
        if any(key in h for h in history):
            ax.plot([h["step"] for h in history if key in h], [h[key] for h in history if key in h], label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_xlim(0, max(steps))
    ax.legend()
    ax.set_title("SFT losses")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def checkpoint_to_folder(checkpoint: str | Path, out: str | Path) -> Path:
    """A model folder (as ``final/``) from a ``checkpoint-<step>/`` of a run: to evaluate or ship
    an intermediate step."""
    from safetensors.torch import load_file

    from pixelis_ros.training.config import load_config
    from pixelis_ros.training.losses import SFTModel

    checkpoint = Path(checkpoint)
    config = load_config(checkpoint / "sft_config.yaml")
    _, processor, backbone = load_backbone(config)
    model = SFTModel(backbone, make_heads(config, backbone))
    model.load_state_dict(load_file(str(checkpoint / "model.safetensors")))
    profile = PromptProfile(system_prompt=config.system_prompt, first_frame=config.first_frame,
                            heads="refine" if config.heads else "off")
    return save_final(model, processor, config, profile, Path(out))
