"""``pixelis sim ...``: the simulator's commands, registered on the main parser by
``add_sim_commands`` (``pixelis_ros/cli/__init__.py`` calls it).

Each command is an ``add_<name>(sim_sub)`` function that adds one subparser with
``set_defaults(func=...)``; the function returns the JSON-able result, as every ``pixelis``
command does. Errors listed in ``USAGE_ERRORS`` are bad input: the main ``pixelis`` entry point
reports them as ``{"error": ...}`` / a message with exit status 2.

This module is imported on every ``pixelis`` start, so it imports nothing heavy at the top.
"""

from __future__ import annotations

import argparse

from pixelis_ros.cli.model_option import add_model_arguments
from pixelis_ros.node.config import ConfigError
from pixelis_ros.progress import add_quiet_flag
from pixelis_ros.sim.suites import SuiteError

USAGE_ERRORS: tuple[type[Exception], ...] = (SuiteError, ConfigError)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def cmd_sim_export(args) -> dict:
    from pixelis_ros.sim.export import default_workers, export_suite
    from pixelis_ros.sim.suites import load_suite

    suite = load_suite(args.suite)
    return export_suite(suite, args.out, episodes=args.episodes, workers=args.workers or default_workers())


def add_export(sim_sub) -> None:
    p = sim_sub.add_parser("export", help="export a suite's episodes (JSONL, frames as JPEG, manifest)",
                           description="Write DIR/episodes.jsonl, DIR/images/<id>/<k>.jpg, DIR/manifest.json and "
                                       "DIR/timing.json for a suite. Deterministic: the same suite and episode count "
                                       "give byte-identical files (timing.json aside).")
    p.add_argument("--suite", required=True, help="a shipped suite name (see sim/suites/) or a suite .yaml path")
    p.add_argument("--out", required=True, help="output folder (a previous export there is replaced)")
    p.add_argument("--episodes", type=_positive_int, help="episodes to export (default: the suite's count)")
    p.add_argument("--workers", type=_positive_int, help="worker processes (default: min(2, CPU count))")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_quiet_flag(p)
    p.set_defaults(func=cmd_sim_export)


def _policy(args) -> tuple[str, str]:
    """(what ``--policy``/``--model`` name, the flag that named it): ``--model DIR`` is the same
    as ``--policy DIR``, the way every model-serving command names a folder."""
    if args.model is None:
        return args.policy, "--policy"
    if args.policy != "model":
        raise SuiteError(f"--model {args.model} already names the policy; drop --policy {args.policy}")
    return args.model, "--model"


def cmd_sim_bench(args) -> dict:
    from pixelis_ros.sim.bench import answer_prior, markdown, no_tool, oracle, run_bench
    from pixelis_ros.sim.suites import iter_tasks, load_suite

    name, flag = _policy(args)
    served = None
    if name not in ("oracle", "noTool"):
        served = served_model(name, args.backend, flag)  # before the suite renders anything: fails fast
    suite = load_suite(args.suite)
    start = args.seed  # episodes start..start+N-1 of the suite's schedule
    if name == "oracle":
        policy = oracle
    elif name == "noTool":
        # The prior is learned on episodes the bench does not score.
        policy = no_tool(answer_prior(iter_tasks(suite, args.episodes, start=start + args.episodes)))
    else:
        policy = _model_policy(*served, flag)
    result = run_bench(iter_tasks(suite, args.episodes, start=start), policy, start=start, total=args.episodes)
    result.update(policy=args.policy, suite=suite.name, markdown=markdown(result, args.policy))
    if served is not None:
        result.update(backend=served[0], model=served[1])
    return result


def served_model(policy: str, backend: str, flag: str = "--policy") -> tuple[str, str]:
    """(backend, folder) for ``policy``: ``model`` is the bundled model (for its backend),
    anything else a folder, whose kind is checked here, before any backend is imported."""
    from pathlib import Path

    from pixelis_ros.policy import PolicyError
    from pixelis_ros.policy.bundled import default_model
    from pixelis_ros.policy.folder_kind import resolve_backend

    if flag == "--policy" and policy != "model" and not Path(policy).is_dir():
        raise SuiteError(f"--policy {policy!r}: not 'model', 'oracle', 'noTool' or a model folder")
    try:
        backend, folder = resolve_backend(backend, None if policy == "model" else policy)
        return backend, str(folder or default_model(backend))
    except (PolicyError, OSError) as e:
        raise SuiteError(f"{flag} {policy}: {e}") from None


def _model_policy(backend: str, folder: str, flag: str):
    """One policy (loaded once) for every task, from a local model folder."""
    from pixelis_ros.policy import PolicyError
    from pixelis_ros.policy.registry import load_policy

    try:
        model = load_policy(backend, folder)
    except PolicyError as e:
        raise SuiteError(f"{flag} {folder}: {e}") from None
    return lambda task: model


def add_bench(sim_sub) -> None:
    p = sim_sub.add_parser("bench", help="per-family accuracy, acting success and tool use of a policy on a suite")
    p.add_argument("--suite", required=True, help="a shipped suite name or a suite .yaml path")
    p.add_argument("--policy", default="model", help="model (the bundled models/pixelis-small, or --model) | oracle | "
                                                     "noTool | a model folder")
    add_model_arguments(p)
    p.add_argument("--episodes", type=_positive_int, default=60, help="episodes to score")
    p.add_argument("--seed", type=int, default=0, help="first episode index of the suite's schedule")
    p.add_argument("--json", action="store_true", help="print JSON (the Markdown table is in 'markdown'; each "
                                                       "episode answered wrong or off target is in 'failures')")
    add_quiet_flag(p)
    p.set_defaults(func=cmd_sim_bench)


def cmd_sim_loop(args) -> dict:
    from pixelis_ros.ros.sim_loop import sim_loop

    name, flag = _policy(args)
    backend, folder = (args.backend, name) if name == "oracle" else served_model(name, args.backend, flag)
    return sim_loop(args.suite, args.episodes, policy=folder, backend=backend, domain=args.domain,
                    speed=args.speed, start=args.seed, answer_timeout_s=args.answer_timeout)


def add_loop(sim_sub) -> None:
    p = sim_sub.add_parser("loop", help="simulator in the loop: sim node and agent node in two processes over DDS",
                           description="Start the agent node in a child process and the sim node here; they talk only "
                                       "over the ROS 2 wire (Cyclone DDS on loopback). Prints episodes, answered, "
                                       "accuracy, acting_success and latency_ms {p50, p99} (query sent -> answer received).")
    p.add_argument("--transport", choices=["dds"], default="dds", help="the ROS 2 wire over Cyclone DDS")
    p.add_argument("--suite", default="smoke", help="a shipped suite name or a suite .yaml path")
    p.add_argument("--episodes", type=_positive_int, default=6, help="episodes to play")
    p.add_argument("--seed", type=int, default=0, help="first episode index of the suite's schedule")
    p.add_argument("--policy", default="model", help="model (the bundled models/pixelis-small, or --model), oracle "
                                                     "(expert traces sent with the queries) or a model folder")
    add_model_arguments(p)
    p.add_argument("--domain", type=int, help="DDS domain (default: one derived from this process id)")
    p.add_argument("--speed", type=float, default=1.0, help="camera streaming speed relative to the clip's frame rate")
    p.add_argument("--answer-timeout", type=float, default=120.0, help="seconds to wait for each answer")
    p.add_argument("--json", action="store_true")
    add_quiet_flag(p)
    p.set_defaults(func=cmd_sim_loop)


SIM_COMMANDS = [add_export, add_bench, add_loop]
"""Subcommand registrars, in help order; add new ones (e.g. bench) here."""


def add_sim_commands(sub) -> None:
    """Add ``sim`` and its subcommands to the main parser's subparsers ``sub``."""
    sim = sub.add_parser("sim", help="simulator: export task suites, score policies").add_subparsers(dest="sim", required=True)
    for add in SIM_COMMANDS:
        add(sim)
