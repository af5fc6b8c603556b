"""``pixelis bench ...``: every benchmark, each printing one JSON object with ``--json``.

The benchmarks live with what they measure (``bench_tools.py``, ``sim/bench_speed.py``,
``policy/bench.py``, ``training/bench.py``, ``ttrl/bench.py``, ``ros/bench_node.py``,
``fuzz/``); this module only parses their flags. Nothing heavy is imported at the top.
"""

from __future__ import annotations

import argparse

from pixelis_ros.progress import add_quiet_flag


def cmd_bench_tools(args) -> dict:
    from pixelis_ros.bench_tools import bench_tools
    return bench_tools(repeats=args.repeats)


def cmd_bench_sim(args) -> dict:
    from pixelis_ros.sim.bench_speed import bench_sim
    return bench_sim(repeats=args.repeats)


def cmd_bench_policy(args) -> dict:
    from pixelis_ros.policy.bench import bench_policy

    return bench_policy(arch=args.arch, presets=tuple(args.presets.split(",")), new_tokens=args.new_tokens,
                        repeats=args.repeats, threads=args.threads)


def cmd_bench_sft(args) -> dict:
    from pixelis_ros.training.bench import bench_sft

    return bench_sft(steps=args.steps, threads=args.threads, episodes=args.episodes)


def cmd_bench_agent(args) -> dict:
    from pixelis_ros.training.bench import bench_agent

    return bench_agent(episodes=args.episodes, threads=args.threads)


def cmd_bench_rft(args) -> dict:
    from pixelis_ros.training.bench import bench_rft

    return bench_rft(steps=args.steps, groups=args.groups, threads=args.threads)


def cmd_bench_ttrl(args) -> dict:
    from pixelis_ros.ttrl.bench import bench_ttrl

    return bench_ttrl(runs=args.runs, episodes=args.episodes)


def cmd_bench_node(args) -> dict:
    from pixelis_ros.ros.bench_node import bench_node
    return bench_node(args.seconds, args.queries, args.repeats)


def cmd_bench_soak(args) -> dict:
    from pixelis_ros.ros.bench_node import soak
    return soak(args.minutes)


def _fuzz_targets(text: str) -> list[str]:
    from pixelis_ros.fuzz import TARGETS

    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TARGETS]
    if not names or unknown:
        shown = text if len(text) <= 200 else text[:200] + "…"
        raise argparse.ArgumentTypeError(f"expected comma-separated targets out of {','.join(TARGETS)}, got {shown!r}")
    return names


def cmd_bench_fuzz(args) -> dict:
    from pixelis_ros.cli.inputs import UsageError
    from pixelis_ros.fuzz import bench_fuzz

    try:
        return bench_fuzz(args.cases, args.seed, args.targets, jobs=args.jobs)
    except ValueError as e:  # too few cases for the targets, ...
        raise UsageError(str(e)) from None


def fuzz_exit_status(summary: dict) -> int:
    """1 when a case escaped (internal error, hang, unbounded message, over memory), as
    ``python -m pixelis_ros.fuzz`` exits."""
    return 1 if sum(summary[k] for k in ("internal_errors", "hangs", "unbounded_messages", "over_memory")) else 0


def add_bench_commands(sub) -> None:
    """Add ``bench`` and its subcommands to the main parser's subparsers ``sub``."""
    bench = sub.add_parser("bench", help="benchmarks (JSON)").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("tools", help="median latency per tool on this machine")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", action="store_true")
    add_quiet_flag(p)
    p.set_defaults(func=cmd_bench_tools)
    p = bench.add_parser("sim", help="simulator speed: scene generation + RGB-D render, task generation per family")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", action="store_true")
    add_quiet_flag(p)
    p.set_defaults(func=cmd_bench_sim)

    p = bench.add_parser("policy", help="policy decode speed: torch eager vs ONNX Runtime (CPU, CUDA where present)",
                         description="Decode tokens/s, time to first token and peak RSS per backend and preset "
                                     "(one 448x448 image, exactly --new-tokens tokens; stop tokens ignored). "
                                     "Each backend runs in its own process.")
    p.add_argument("--arch", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl"])
    p.add_argument("--presets", default="tiny,small", help="comma-separated presets (default tiny,small)")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per backend (median), after one warm-up")
    p.add_argument("--threads", type=int, default=1,
                   help="threads per backend (0: the library's default); 1 is fastest for both backends at these sizes")
    p.add_argument("--json", action="store_true")
    add_quiet_flag(p)
    p.set_defaults(func=cmd_bench_policy)

    p = bench.add_parser("sft", help="SFT steps/s, samples/s and peak RSS of the bundled recipe's preset")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--episodes", type=int, default=48, help="validation episodes exported to train on")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_sft)
    p = bench.add_parser("rft", help="CC-RFT rollouts/s, RL steps/s and a group's rollout time (batched first "
                                     "turns vs one by one) on the bundled recipe")
    p.add_argument("--steps", type=int, default=6, help="RL steps of the timed run")
    p.add_argument("--groups", type=int, default=3, help="scenes of the grouped vs one-by-one rollout comparison")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_rft)
    p = bench.add_parser("agent", help="episode latency p50/p99 of the bundled model: torch eager vs ONNX Runtime")
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    add_quiet_flag(p)
    p.set_defaults(func=cmd_bench_agent)

    p = bench.add_parser("ttrl", help="test-time RL: update time (N=4), adapter swap into ONNX Runtime, serving "
                                      "p99 with and without the worker")
    p.add_argument("--runs", type=int, default=5, help="timed updates and swaps (medians)")
    p.add_argument("--episodes", type=int, default=24, help="served episodes per serving-latency run")
    p.add_argument("--json", action="store_true")
    add_quiet_flag(p)
    p.set_defaults(func=cmd_bench_ttrl)

    p = bench.add_parser("node", help="agent node over DDS: camera ingest rate, newest-frame-to-episode-start latency")
    p.add_argument("--seconds", type=float, default=5.0, help="camera streaming time per ingest run")
    p.add_argument("--queries", type=int, default=40, help="queries for the episode-start latency")
    p.add_argument("--repeats", type=int, default=3, help="ingest runs (the median is reported)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_node)
    p = bench.add_parser("soak", help="agent node RSS over a long 30 Hz camera stream with queries")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_soak)

    p = bench.add_parser("fuzz", help="seeded fuzz cases: internal errors, hangs, unbounded messages, peak RSS",
                         description="Seeded malformed inputs against the agent loop, the image codec, the bag reader "
                                     "and model folders, each case in a worker process with a time limit (the JSON "
                                     "of `python -m pixelis_ros.fuzz --json`). Exit status 1 when any case ended in "
                                     "an internal error, a hang, an unbounded message or an over-memory case.")
    p.add_argument("--cases", type=int, default=10000, help="total cases, shared over the targets by weight")
    p.add_argument("--seed", type=int, default=0)
    from pixelis_ros.fuzz import TARGETS  # names only: the fuzz package imports nothing heavy up front

    p.add_argument("--targets", type=_fuzz_targets, metavar="T1,T2",
                   help=f"comma-separated targets out of {','.join(TARGETS)} (default: all)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes at a time")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_bench_fuzz, exit_status=fuzz_exit_status)
