"""The ``pixelis`` command: run single tools, whole episodes, the demo and the benchmarks.

Every command takes ``--json``; its output shapes are a contract (see the README). Bad input is
reported as ``{"error": ...}`` (or a message on stderr) with exit status 2, never a traceback.
stdout carries the result only; stderr carries our own messages and, on a terminal, progress bars
(``pixelis_ros/progress.py``: off with ``--json`` or ``--quiet``). A reader of stdout that goes
away early (``| head``) ends the command quietly with status 141.

One module per command group adds its subparsers here (``tools``, ``sim``, ``bag``, ``node``, ``ask``,
``model``, ``export``, ``train``, ``ttrl``, ``bench``); ``run`` and ``demo`` are below. This package
is the only one that wires every part together (DESIGN §3): ``node/`` and ``sim/`` do not import
``ros/``, the commands that put them on the wire do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pixelis_ros.cli.ask import add_ask_command
from pixelis_ros.cli.bag import USAGE_ERRORS as BAG_USAGE_ERRORS, add_bag_commands
from pixelis_ros.cli.bench import add_bench_commands
from pixelis_ros.cli.export import USAGE_ERRORS as EXPORT_USAGE_ERRORS, add_export_commands
from pixelis_ros.cli.inputs import UsageError, add_inputs, load
from pixelis_ros.cli.model import USAGE_ERRORS as MODEL_USAGE_ERRORS, add_model_commands
from pixelis_ros.cli.model_option import add_model_arguments
from pixelis_ros.cli.node import USAGE_ERRORS as NODE_USAGE_ERRORS, add_node_commands
from pixelis_ros.cli.sim import USAGE_ERRORS as SIM_USAGE_ERRORS, add_sim_commands
from pixelis_ros.cli.tools import add_tools_commands
from pixelis_ros.cli.train import USAGE_ERRORS as TRAIN_USAGE_ERRORS, add_train_commands
from pixelis_ros.cli.ttrl import USAGE_ERRORS as TTRL_USAGE_ERRORS, add_ttrl_commands
from pixelis_ros.image_codec import ImageDecodeError
from pixelis_ros.media import MediaError
from pixelis_ros.progress import configure as configure_progress

__all__ = ["UsageError", "build_parser", "main"]


def _run_policy(args):
    """A ScriptedPolicy for ``--trace``, else the model folder (default: the bundled model)."""
    if args.trace:
        from pixelis_ros.policy.scripted import ScriptedPolicy
        from pixelis_ros.trace_file import TraceFileError, read_trace

        try:
            return ScriptedPolicy(read_trace(args.trace))
        except TraceFileError as e:
            raise UsageError(f"cannot read trace {e}") from None
    from pixelis_ros.policy.base import PolicyError
    from pixelis_ros.policy.registry import load_policy

    try:
        return load_policy(args.backend, args.model)  # a missing or mismatched folder fails before any backend import
    except (PolicyError, OSError) as e:
        raise UsageError(f"--model {args.model or 'the bundled model'} (backend {args.backend}): {e}") from None


def cmd_run(args) -> dict:
    from pixelis_ros.agent import Agent
    from pixelis_ros.render import render_episode, save_rgb

    frames = load(args)
    episode = Agent(_run_policy(args)).run(args.query, frames)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = episode.to_json()
    (out / "trace.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    save_rgb(out / "annotated.png", render_episode(episode, frames))
    problems = [s["error"] for s in record["steps"] if "error" in s]
    problems += [s["response"]["error"] for s in record["steps"] if isinstance(s.get("response"), dict) and "error" in s["response"]]
    if episode.error:
        problems.append(episode.error)
    return {"answer": episode.answer, "action": episode.action, "stop_reason": episode.stop_reason,
            "problems": problems, "steps": record["steps"], "trace_json": str(out / "trace.json"),
            "annotated": str(out / "annotated.png")}


def cmd_demo(args) -> dict:
    from pixelis_ros.demo import run_demo
    return run_demo(args.out, seed=args.seed, sim=not args.no_sim)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixelis", description="Pixelis: a vision-language agent that reasons in pixels.")
    sub = parser.add_subparsers(dest="command", required=True)

    add_tools_commands(sub)

    p = sub.add_parser("run", help="run the agent on an image or video (the bundled model, a model folder or a script)")
    add_inputs(p)
    p.add_argument("--query", required=True)
    p.add_argument("--trace", help="a CoTA trace file replayed by the ScriptedPolicy instead of a model")
    add_model_arguments(p)
    p.add_argument("--out", default="out/run", help="folder for trace.json and annotated.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the built-in demo: zoom -> OCR -> answer on a generated scene")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sim", action="store_true", help="skip the simulator episodes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    add_bench_commands(sub)
    add_sim_commands(sub)
    add_bag_commands(sub)
    add_node_commands(sub)
    add_ask_command(sub)
    add_model_commands(sub)
    add_export_commands(sub)
    add_train_commands(sub)
    add_ttrl_commands(sub)
    return parser


def _print_human(result: dict) -> None:
    if "markdown" in result:
        print(result["markdown"])
        return
    for name, episode in result.get("sim_episodes", {}).items():
        print(f"{name}: {episode['question']} -> {episode['answer']} (truth {episode['truth']})")
    for key, value in result.items():
        if key not in ("steps", "sim_episodes", "trace"):  # printed as they happen, or too long to read
            print(f"{key}: {json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value}")


EXIT_BROKEN_PIPE = 141
"""Exit status when the reader of stdout went away (``pixelis ... --json | head -c 10``): 128 +
SIGPIPE, what a shell reports for a tool killed by the signal, so pipelines read it the usual way."""


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    configure_progress(json=getattr(args, "json", False), quiet=getattr(args, "quiet", False))
    try:
        result = args.func(args)
    except (UsageError, MediaError, ImageDecodeError, *SIM_USAGE_ERRORS, *BAG_USAGE_ERRORS, *NODE_USAGE_ERRORS,
            *MODEL_USAGE_ERRORS, *EXPORT_USAGE_ERRORS, *TRAIN_USAGE_ERRORS,
            *TTRL_USAGE_ERRORS) as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(e)}))
        else:
            print(f"pixelis: error: {e}", file=sys.stderr)
        return 2
    if getattr(args, "json", False):
        print(json.dumps(result, ensure_ascii=False))
    else:
        _print_human(result)
    # A command whose result can say "something failed" (bench fuzz) sets its own exit status.
    return getattr(args, "exit_status", lambda _: 0)(result)


def main(argv: list[str] | None = None) -> int:
    # The flush is inside the try (also on SystemExit from --help): left to interpreter exit, a
    # closed pipe would print "Exception ignored ... BrokenPipeError" and exit 120.
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # Python's documented recipe (library/signal.html, "Note on SIGPIPE"): point stdout at
        # devnull so the final flush at exit has somewhere to go.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
