"""Benchmarks of the learning side (commands, not tests; DESIGN §4.10):

- ``pixelis bench sft``: SFT throughput of the bundled recipe's preset on this machine — steps/s
  and samples/s (median over windows after a warm-up) and the peak RSS. Self-contained: it exports
  a few validation episodes and builds the initial model in a temporary folder.
- ``pixelis bench rft``: CC-RFT's rollouts/s, RL steps/s and seconds per group on the bundled
  recipe, and a group's rollout with batched first turns against one-by-one sampling.
- ``pixelis bench agent``: episode latency p50/p99 of the bundled model on simulator test
  episodes, torch eager and ONNX Runtime on the same episodes in one run, with their ratio (whole
  episodes, tools included, and the policy's share of it).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from pixelis_ros.progress import progress as progress_bar


def _peak_rss_mb() -> float:
    from pixelis_ros.policy.bench import _peak_rss_mb as peak

    return round(peak(), 1)


def bench_sft(steps: int = 30, threads: int = 2, episodes: int = 48, batch_size: int = 8) -> dict:
    import json

    import yaml

    from pixelis_ros.policy.builder import build_model
    from pixelis_ros.sim.export import export_suite
    from pixelis_ros.sim.suites import load_suite
    from pixelis_ros.training.config import load_config
    from pixelis_ros.training.sft import train

    recipe = Path(__file__).resolve().parents[2] / "training" / "configs" / "sft_small.yaml"
    base = yaml.safe_load(recipe.read_text())
    with tempfile.TemporaryDirectory(prefix="pixelis-bench-sft-") as tmp:
        tmp = Path(tmp)
        export_suite(load_suite("val"), tmp / "data", episodes=episodes)
        model = build_model("qwen3_vl", "small", tmp / "init", corpus=str(tmp / "data"))["out"]
        window = 5
        config = load_config(None, {**base, "model": model, "data": str(tmp / "data"), "output_dir": str(tmp / "run"),
                                    "max_steps": steps, "batch_size": batch_size, "threads": threads,
                                    "logging_steps": window, "save_steps": 0, "max_episodes": 0})
        t0 = time.monotonic()
        summary = train(config, progress=False)
        wall = time.monotonic() - t0
        log = [json.loads(line) for line in (tmp / "run" / "log.jsonl").read_text().splitlines()]
    timed = log[1:] or log  # the first window holds the warm-up (first batches, allocator)
    return {"preset": "qwen3_vl/small", "threads": threads, "batch_size": batch_size, "steps": steps,
            "episodes": summary["episodes"],
            "steps_per_s": statistics.median(r["steps_per_s"] for r in timed),
            "samples_per_s": statistics.median(r["samples_per_s"] for r in timed),
            "windows_steps_per_s": [r["steps_per_s"] for r in log],
            "tokens_per_sample": round(statistics.fmean(r["tokens"] for r in log) / batch_size, 1),
            "peak_rss_mb": _peak_rss_mb(), "wall_s": round(wall, 1)}


def _percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 1), "p99": round(p99, 1)}


def bench_agent(episodes: int = 24, threads: int = 1, suite: str = "test") -> dict:
    import torch

    from pixelis_ros.agent import Agent
    from pixelis_ros.policy.bundled import default_model
    from pixelis_ros.policy.registry import load_policy
    from pixelis_ros.sim.suites import iter_tasks, load_suite
    from pixelis_ros.tools import Toolbox

    torch.set_num_threads(threads)
    policies = {"torch": load_policy("torch", default_model("torch")),
                "onnx": load_policy("onnx", default_model("onnx"), intra_op_threads=threads)}
    tasks = list(iter_tasks(load_suite(suite), episodes))
    toolbox = Toolbox()
    for policy in policies.values():  # warm-up: first calls allocate, OCR loads its models
        Agent(policy, toolbox).run(tasks[0].question, tasks[0].frames)
    rows = {}
    for name, policy in policies.items():
        total, generate, correct = [], [], 0
        for task in progress_bar(tasks, desc=f"bench agent: {name}", unit="episode"):
            episode = Agent(policy, toolbox).run(task.question, task.frames)
            total.append(episode.total_ms)
            generate.append(sum(r.generate_ms for r in episode.records))
            correct += task.is_correct(episode.answer)
        rows[name] = {"episode_ms": _percentiles(total), "policy_ms": _percentiles(generate),
                      "accuracy": round(correct / len(tasks), 4)}
    ratio = {k: round(rows["torch"][k]["p50"] / rows["onnx"][k]["p50"], 2) for k in ("episode_ms", "policy_ms")}
    return {"model": str(default_model("torch")), "suite": suite, "episodes": len(tasks), "threads": threads,
            "backends": rows, "torch_over_onnx_p50": ratio, "peak_rss_mb": _peak_rss_mb()}


def bench_rft(steps: int = 6, groups: int = 3, threads: int = 2) -> dict:
    """CC-RFT's cost on the bundled recipe (``rft_small.yaml``): a short run of ``steps`` RL steps
    (median rollout and update seconds per step, rollouts/s, RL steps/s), then, in the same
    process on the same ``groups`` scenes, a group's rollout with its first turns batched against
    the same G episodes sampled one by one (the baseline)."""
    import json

    import torch
    import yaml

    from pixelis_ros.policy.hf import load_hf_policy
    from pixelis_ros.sim.suites import iter_tasks, load_suite
    from pixelis_ros.tools import Toolbox
    from pixelis_ros.training.config import load_config
    from pixelis_ros.training.rft import train_rft
    from pixelis_ros.training.rft_config import RFTConfig
    from pixelis_ros.training.rft_rollout import SamplingPolicy, rollout_group

    recipe = Path(__file__).resolve().parents[2] / "training" / "configs" / "rft_small.yaml"
    base = yaml.safe_load(recipe.read_text())
    with tempfile.TemporaryDirectory(prefix="pixelis-bench-rft-") as tmp:
        config = load_config(None, {**base, "output_dir": tmp, "max_steps": steps, "threads": threads, "save_steps": 0},
                             cls=RFTConfig)
        t0 = time.monotonic()
        train_rft(config, progress=False)
        wall = time.monotonic() - t0
        log = [json.loads(line) for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    torch.set_num_threads(threads)
    policy = load_hf_policy(Path(config.model), max_new_tokens=config.max_new_tokens)
    sampler = SamplingPolicy(policy, config.temperature, config.pointer_temperature, config.max_new_tokens)
    toolbox, size = Toolbox(), config.num_generations
    grouped, sequential = [], []
    for task in iter_tasks(load_suite(config.suite), groups, start=config.start_episode + 10_000):
        torch.manual_seed(0)
        t = time.monotonic()
        rollout_group(sampler, task, toolbox, size, config.max_steps_per_episode)
        grouped.append(time.monotonic() - t)
        t = time.monotonic()
        for _ in range(size):
            rollout_group(sampler, task, toolbox, 1, config.max_steps_per_episode)
        sequential.append(time.monotonic() - t)
    timed = log[1:] or log  # the first step holds the warm-up
    rollout = statistics.median(r["rollout_s"] for r in timed)
    step = statistics.median(r["step_s"] for r in timed)
    per_step = config.groups_per_step * size
    return {"recipe": "training/configs/rft_small.yaml", "model": config.model, "threads": threads, "steps": steps,
            "num_generations": size, "groups_per_step": config.groups_per_step,
            "step_s": round(step, 2), "rollout_s_per_step": round(rollout, 2), "update_s_per_step": round(step - rollout, 2),
            "rl_steps_per_s": round(1 / step, 4), "rollouts_per_s": round(per_step / step, 3),
            "seconds_per_group": round(rollout / config.groups_per_step, 2),
            "group_rollout_s": {"batched_first_turn": round(statistics.median(grouped), 2),
                                "one_by_one": round(statistics.median(sequential), 2),
                                "ratio": round(statistics.median(sequential) / statistics.median(grouped), 2)},
            "wall_s": round(wall, 1), "peak_rss_mb": _peak_rss_mb()}
