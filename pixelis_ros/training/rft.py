"""``pixelis train rft``: Curiosity-Coherence Reinforcement Fine-Tuning (DESIGN §1 phase 2, §4.7).

Read top to bottom. Load the SFT model folder with its heads in refine mode (the executed box
comes from the pointer); with ``lora_r > 0`` a fresh LoRA adapter is what trains and the
reference is the adapter-disabled model, else every weight trains and a frozen copy is the
reference (``beta: 0`` builds none). Each step: for ``groups_per_step`` scenes of the train suite
run a group of G complete episodes through the ordinary ``Agent`` and ``Toolbox``
(``rft_rollout``), score them (``rft_rewards``), normalise advantages within each group, and take
one GRPO step of ours (``rft_loss``: why not TRL's trainer is said there). Multi-process through
``accelerate launch`` as for SFT: each process rolls out its own scenes, DDP averages gradients.

Every step logs the reward terms, accuracy, tool-call rate, chain length, valid-call rate, KL and
the pointer's entropy to the progress bar, ``log.csv`` and ``log.jsonl``; ``curves.png`` at the
end. The collapse watch compares a rolling window with the first window (the SFT policy): a
tool-call rate below half of it, or chains twice as long, is a warning in the log, on stderr and
in ``summary.json``. ``checkpoint-<step>/`` and ``final/`` are model folders like SFT's.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import yaml

from pixelis_ros.training.rft_config import RFTConfig
from pixelis_ros.training.rft_loss import (PolicyLogProbs, chunk_loss, collate_turns, group_advantages, token_count,
                                           trajectory_turns, turn_sequence)
from pixelis_ros.training.rft_rewards import ForwardModel, calls, group_rewards, truncated
from pixelis_ros.training.rft_rollout import SamplingPolicy, rollout_group

FORWARD_BATCH = 8  # turn sequences per forward/backward pass (memory only: the loss is the same)


TRAINED_ADAPTER = "rft"


def load_rft_policy(config: RFTConfig):
    """The SFT policy to improve (heads in refine mode), made trainable as the recipe says: with
    ``adapter`` a second, trainable copy of that SFT adapter (the first stays the reference); with
    ``lora_r`` a fresh adapter; else every weight."""
    from pixelis_ros.policy.hf import load_hf_policy

    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = load_hf_policy(Path(config.model), dtype=config.dtype, device=device, heads="auto",
                            max_new_tokens=config.max_new_tokens, adapter=config.adapter or None)
    if config.gradient_checkpointing:
        policy.model.gradient_checkpointing_enable()
    if config.adapter:
        policy.model.load_adapter(config.adapter, adapter_name=TRAINED_ADAPTER, is_trainable=True)
        policy.set_adapter(TRAINED_ADAPTER)
    elif config.lora_r:
        policy.add_adapter(TRAINED_ADAPTER, r=config.lora_r, alpha=config.lora_alpha)
    else:
        policy.model.requires_grad_(True)
    return policy


def _reference(policy, config: RFTConfig):
    """The KL anchor (``None`` when ``beta`` is 0): the SFT adapter, or the adapter-disabled model,
    on the same backbone; else a frozen copy of the backbone. The heads' copy is a few MB."""
    if not config.beta:
        return None
    heads = copy.deepcopy(policy.heads).requires_grad_(False) if policy.heads is not None else None
    shared = bool(config.adapter or config.lora_r)
    backbone = policy.model if shared else copy.deepcopy(policy.model).requires_grad_(False).eval()
    return PolicyLogProbs(backbone, heads, config.temperature, config.pointer_temperature)


@contextlib.contextmanager
def _as_reference(policy, config: RFTConfig):
    """The shared backbone as the reference policy for the duration (no gradient)."""
    with torch.no_grad():
        if config.adapter:
            policy.model.set_adapter(Path(config.adapter).name)
            try:
                yield
            finally:  # peft's set_adapter also makes the active adapter trainable again
                policy.model.set_adapter(TRAINED_ADAPTER)
        elif config.lora_r:
            with policy.model.disable_adapter():
                yield
        else:
            yield


def _step_metrics(groups, toolbox) -> dict:
    from pixelis_ros.sim.bench import _call_stats

    episodes = [t.episode for _, trajs, _ in groups for t in trajs]
    stats = [_call_stats(e, toolbox) for e in episodes]
    call_turns, valid = sum(s[0] for s in stats), sum(s[1] for s in stats)
    row = {"reward": statistics.fmean(t.reward for _, trajs, _ in groups for t in trajs),
           "accuracy": statistics.fmean(c for _, _, r in groups for c in r.correct),
           "tool_call_rate": statistics.fmean(r.tool_call_rate for _, _, r in groups),
           "chain": statistics.fmean(sum(rec.turn.call is not None for rec in e.records) for e in episodes),
           "executed_calls": statistics.fmean(len(calls(e)) for e in episodes),
           "valid_call_rate": valid / call_turns if call_turns else None,
           "masked": statistics.fmean(t.masked for _, trajs, _ in groups for t in trajs)}
    for name in groups[0][2].terms:
        row[f"r_{name}"] = statistics.fmean(v for _, _, r in groups for v in r.terms[name])
    return row


class CollapseWatch:
    """Tool use collapsing (or exploding) against the first window of steps, the SFT policy's."""

    def __init__(self, window: int):
        self.window, self.rates, self.chains = window, [], []
        self.reference: tuple[float, float] | None = None
        self.warnings: list[str] = []

    def update(self, step: int, rate: float, chain: float) -> str | None:
        self.rates.append(rate)
        self.chains.append(chain)
        if self.reference is None:
            if len(self.rates) == self.window:
                self.reference = (statistics.fmean(self.rates), statistics.fmean(self.chains))
            return None
        now_rate = statistics.fmean(self.rates[-self.window:])
        now_chain = statistics.fmean(self.chains[-self.window:])
        ref_rate, ref_chain = self.reference
        message = None
        if now_rate < 0.5 * ref_rate:
            message = f"step {step}: TOOL USE COLLAPSING: tool-call rate {now_rate:.2f} < half of the start's {ref_rate:.2f}"
        elif ref_chain and now_chain > 2 * ref_chain:
            message = f"step {step}: TOOL USE EXPLODING: mean chain {now_chain:.2f} > twice the start's {ref_chain:.2f}"
        if message:
            self.warnings.append(message)
        return message


def train_rft(config: RFTConfig, progress: bool = True) -> dict:
    """Run the recipe; returns the summary written to ``output_dir/summary.json``."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from pixelis_ros.progress import progress as progress_bar
    from pixelis_ros.sim.suites import iter_tasks, load_suite
    from pixelis_ros.tools import Toolbox

    torch.set_num_threads(config.threads)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available(),
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(config.seed * 1000 + rank)  # each process samples its own trajectories
    out = Path(config.output_dir)
    policy = load_rft_policy(config)
    reference = _reference(policy, config)
    model = PolicyLogProbs(policy.model, policy.heads, config.temperature, config.pointer_temperature)
    backbone_params = [p for p in policy.model.parameters() if p.requires_grad]
    groups_ = [{"params": backbone_params, "lr": config.lr}]
    if policy.heads is not None:
        groups_.append({"params": list(policy.heads.parameters()), "lr": config.heads_lr})
    optimizer = torch.optim.AdamW(groups_, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    trainable = [p for g in groups_ for p in g["params"]]
    forward_model = ForwardModel(config.curiosity_lr, config.seed + rank) if config.curiosity_weight else None
    sampler = SamplingPolicy(policy, config.temperature, config.pointer_temperature, config.max_new_tokens)
    suite = load_suite(config.suite)
    per_process = config.max_steps * config.groups_per_step
    tasks = iter_tasks(suite, per_process, start=config.start_episode + rank * per_process)
    toolbox = Toolbox()
    pad_id = policy.tokenizer.pad_token_id if policy.tokenizer.pad_token_id is not None else policy.pad_id
    watch = CollapseWatch(config.collapse_window)
    bar = progress_bar(total=config.max_steps, desc="rft",
                       enabled=None if progress and accelerator.is_main_process else False)
    history: list[dict] = []
    t_start, rollouts = time.monotonic(), 0
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("log.csv", "log.jsonl"):
            (out / name).unlink(missing_ok=True)
    for step in range(1, config.max_steps + 1):
        t0 = time.monotonic()
        groups = []
        for _ in range(config.groups_per_step):
            task = next(tasks)
            trajectories = rollout_group(sampler, task, toolbox, config.num_generations, config.max_steps_per_episode)
            rewards = group_rewards(task, [t.episode for t in trajectories], config, forward_model)
            for i, (t, a) in enumerate(zip(trajectories, group_advantages(rewards.total))):
                t.reward, t.advantage, t.masked = rewards.total[i], a, truncated(t.episode)
            groups.append((task, trajectories, rewards))
        rollouts += config.groups_per_step * config.num_generations
        t_rollout = time.monotonic() - t0
        turns = trajectory_turns([t for _, trajs, _ in groups for t in trajs], with_zero_advantage=bool(config.beta))
        if not turns and world > 1:  # every process must join the gradient all-reduce
            turns = trajectory_turns([t for _, trajs, _ in groups for t in trajs], with_zero_advantage=True)[:1]
        seqs = [turn_sequence(policy, turn, advantage) for turn, advantage in turns]
        count = token_count(seqs, config.pointer_weight)
        olds: dict[int, tuple] = {}
        kl_sum, entropies, loss_value = 0.0, [], 0.0
        model.train()
        for iteration in range(config.num_iterations if seqs else 0):
            chunks = [seqs[i:i + FORWARD_BATCH] for i in range(0, len(seqs), FORWARD_BATCH)]
            for c, chunk in enumerate(chunks):
                batch = collate_turns(chunk, pad_id)
                # gradients are all-reduced once per pass, after the last chunk
                with accelerator.no_sync(model) if c < len(chunks) - 1 else contextlib.nullcontext():
                    tokens, pointers, ents = model(batch, chunk)
                    if iteration == 0:  # the rollout policy's log-probs (TRL's old_per_token_logps) and the reference's
                        ref = None
                        if reference is not None:
                            with _as_reference(policy, config):
                                ref = reference(batch, chunk)[:2]
                        olds[c] = ([t.detach() for t in tokens], [p if p is None else p.detach() for p in pointers]), ref
                        entropies += [float(e) for e in ents if e is not None]
                    old, ref = olds[c]
                    total, kl = chunk_loss(chunk, (tokens, pointers), old, ref, config)
                    accelerator.backward(total / count)
                    kl_sum += kl if iteration == 0 else 0.0
                    loss_value += float(total.detach()) / count / config.num_iterations
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        with warnings.catch_warnings():
            # A step whose groups gave no gradient (every advantage 0) has no optimizer step, yet the
            # warm-up counts RL steps on purpose: torch's "scheduler before optimizer" warning is moot.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before "
                                                      r"`optimizer\.step\(\)`", category=UserWarning)
            scheduler.step()
        model.eval()
        row = {"step": step, **_step_metrics(groups, toolbox), "kl": kl_sum / count if config.beta else None,
               "pointer_entropy": statistics.fmean(entropies) if entropies else None, "loss": loss_value,
               "sequences": len(seqs), "rollout_s": round(t_rollout, 2), "step_s": round(time.monotonic() - t0, 2)}
        warning = watch.update(step, row["tool_call_rate"], row["chain"])
        row["warning"] = warning or ""
        history.append(row)
        if accelerator.is_main_process:
            if warning:
                tqdm.write(f"WARNING {warning}", file=sys.stderr)
            bar.update(1)
            bar.set_postfix(acc=f"{row['accuracy']:.2f}", r=f"{row['reward']:.2f}", tools=f"{row['tool_call_rate']:.2f}",
                            chain=f"{row['chain']:.1f}", kl=f"{row['kl'] or 0:.4f}")
            if step % config.logging_steps == 0 or step == config.max_steps:
                _append_logs(out, row)
            if config.save_steps and step % config.save_steps == 0 and step < config.max_steps:
                save_rft_folder(accelerator.unwrap_model(model), policy, config, out / f"checkpoint-{step}")
    bar.close()
    accelerator.wait_for_everyone()
    seconds = time.monotonic() - t_start
    summary = {"steps": config.max_steps, "processes": world, "rollouts": rollouts * world,
               "train_seconds": round(seconds, 1), "rollouts_per_s": round(rollouts * world / seconds, 3),
               "steps_per_s": round(config.max_steps / seconds, 4),
               "seconds_per_group": round(statistics.fmean(h["rollout_s"] for h in history) / config.groups_per_step, 2),
               "start": _window(history[:config.collapse_window]), "end": _window(history[-config.collapse_window:]),
               "collapse_warnings": watch.warnings}
    if accelerator.is_main_process:
        summary["final"] = str(save_rft_folder(accelerator.unwrap_model(model), policy, config, out / "final"))
        plot_curves(history, out / "curves.png")
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    accelerator.end_training()
    return summary


def _window(rows: list[dict]) -> dict:
    keys = ("accuracy", "reward", "tool_call_rate", "chain", "valid_call_rate", "kl", "pointer_entropy")
    return {k: round(statistics.fmean(r[k] for r in rows if r.get(k) is not None), 4)
            if any(r.get(k) is not None for r in rows) else None for k in keys}


def _append_logs(out: Path, row: dict) -> None:
    rounded = {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(rounded) + "\n")
    path = out / "log.csv"
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rounded))
        if new:
            writer.writeheader()
        writer.writerow(rounded)


def save_rft_folder(model: PolicyLogProbs, policy, config: RFTConfig, folder: Path) -> Path:
    """A servable model folder; with LoRA, an adapter folder for ``config.model``."""
    from pixelis_ros.training.sft import save_model_folder

    recipes = {"rft_config.yaml": config.to_dict()}
    sft = Path(config.adapter or config.model) / "sft_config.yaml"
    if sft.is_file():
        recipes["sft_config.yaml"] = yaml.safe_load(sft.read_text(encoding="utf-8"))
    if config.adapter or config.lora_r:
        policy.save_adapter(folder, TRAINED_ADAPTER)  # the adapter and the heads
        return save_model_folder(None, None, Path(config.model), policy.profile, folder, recipes)
    return save_model_folder(model.backbone, model.heads, Path(config.model), policy.profile, folder, recipes)


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    panels = [("accuracy", "reward"), ("tool_call_rate", "valid_call_rate"), ("chain",), ("kl",), ("pointer_entropy",),
              tuple(k for k in history[0] if k.startswith("r_"))]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    steps = [h["step"] for h in history]
    for ax, keys in zip(axes.flat, panels):
        for key in keys:
            values = [h.get(key) for h in history]
            if any(v is not None for v in values):
                ax.plot(steps, [v if v is not None else float("nan") for v in values], label=key)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:  # a panel whose metrics were all None has nothing to name
            ax.legend(fontsize=7)
    fig.suptitle("CC-RFT: rewards, tool use and the KL anchor per step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
