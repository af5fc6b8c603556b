"""The ``pixelis`` command: run single tools, whole episodes, the demo and the benchmarks.

Every command takes ``--json``; its output shapes are a contract (see the README). Bad input is
reported as ``{"error": ...}`` (or a message on stderr) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from pixelis_ros.bag_cli import USAGE_ERRORS as BAG_USAGE_ERRORS, add_bag_commands
from pixelis_ros.image_codec import ImageDecodeError
from pixelis_ros.media import MediaError, load_frames
from pixelis_ros.node.cli import USAGE_ERRORS as NODE_USAGE_ERRORS, add_node_commands
from pixelis_ros.policy.cli import USAGE_ERRORS as MODEL_USAGE_ERRORS, add_model_commands
from pixelis_ros.policy.export_cli import USAGE_ERRORS as EXPORT_USAGE_ERRORS, add_export_commands, add_policy_bench
from pixelis_ros.sim.cli import USAGE_ERRORS as SIM_USAGE_ERRORS, add_sim_commands
from pixelis_ros.training.cli import USAGE_ERRORS as TRAIN_USAGE_ERRORS, add_train_commands, add_training_benches
from pixelis_ros.ttrl.cli import USAGE_ERRORS as TTRL_USAGE_ERRORS, add_ttrl_bench, add_ttrl_commands


class UsageError(ValueError):
    pass


def _numbers(text: str, n: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{what} must be {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n:
        raise UsageError(f"{what} must be {n} comma-separated numbers, got {len(values)}")
    return values


def _frame_ref(text: str) -> str:
    """'3', '-1' or '1.5s' -> a frame reference."""
    return text if text.startswith("frame:") else f"frame:{text}"


def _load(args) -> object:
    return load_frames(image=getattr(args, "image", None), frames_dir=getattr(args, "frames", None), video=getattr(args, "video", None))


def _add_inputs(p: argparse.ArgumentParser, image=True) -> None:
    if image:
        p.add_argument("--image", help="an image file")
    p.add_argument("--frames", help="a folder of frames (sorted by name)")
    p.add_argument("--video", help="a video file")


def _tool_call(args) -> tuple[str, dict]:
    a: dict = {}
    if getattr(args, "bbox", None):
        a["bbox_2d"] = _numbers(args.bbox, 4, "--bbox")
    if args.tool in ("zoom", "ocr", "segment"):
        a["image"] = _frame_ref(args.frame)
    if args.tool == "segment":
        if args.point:
            a["point_2d"] = _numbers(args.point, 2, "--point")
    elif args.tool == "track":
        a["start"], a["end"] = _frame_ref(args.start), _frame_ref(args.end)
    elif args.tool == "temporal":
        a["predicate"] = args.predicate
        if args.value is not None:
            a["value"] = args.value
        a["start"], a["end"] = _frame_ref(args.start), _frame_ref(args.end)
    return args.tool, a


def cmd_tools(args) -> dict:
    from pixelis_ros.render import save_rgb
    from pixelis_ros.tools import ToolContext, Toolbox, ToolboxConfig

    config = ToolboxConfig(tool_time_budget_s=args.budget)
    if args.tool in ("segment", "track"):
        backend = args.backend or getattr(config, f"{args.tool}_backend")
        options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
        config = dataclasses.replace(config, **{f"{args.tool}_backend": backend, f"{args.tool}_options": options})
    frames = _load(args)
    name, arguments = _tool_call(args)
    result = Toolbox(config).run(name, arguments, ToolContext(frames=frames))
    if result.error is not None:
        raise UsageError(result.error)
    if getattr(args, "out", None) and result.images:
        save_rgb(args.out, result.images[0])
    return result.data | {"ms": result.ms}


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
    from pixelis_ros.policy.bundled import default_model
    from pixelis_ros.policy.registry import load_policy

    try:
        return load_policy(args.backend, args.model or default_model(args.backend))
    except (PolicyError, OSError) as e:
        raise UsageError(f"--model {args.model or 'the bundled model'} (backend {args.backend}): {e}") from None


def cmd_run(args) -> dict:
    from pixelis_ros.agent import Agent
    from pixelis_ros.render import render_episode, save_rgb

    frames = _load(args)
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


def cmd_bench_tools(args) -> dict:
    from pixelis_ros.bench_tools import bench_tools
    return bench_tools(repeats=args.repeats)


def cmd_bench_sim(args) -> dict:
    from pixelis_ros.sim.bench_speed import bench_sim
    return bench_sim(repeats=args.repeats)


def cmd_bench_node(args) -> dict:
    from pixelis_ros.ros.bench_node import bench_node
    return bench_node(args.seconds, args.queries, args.repeats)


def cmd_bench_soak(args) -> dict:
    from pixelis_ros.ros.bench_node import soak
    return soak(args.minutes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixelis", description="Pixelis: a vision-language agent that reasons in pixels.")
    sub = parser.add_subparsers(dest="command", required=True)

    tools = sub.add_parser("tools", help="run one pixel tool on files").add_subparsers(dest="tool", required=True)
    for name, helptext in [("zoom", "crop and enlarge a region"), ("ocr", "read text"), ("segment", "segment an object"),
                           ("track", "track an object through frames"), ("temporal", "find when something happens")]:
        p = tools.add_parser(name, help=helptext)
        _add_inputs(p, image=name in ("zoom", "ocr", "segment"))
        if name in ("zoom", "ocr", "segment"):
            p.add_argument("--frame", default="-1", help="which frame of --frames/--video: index or <seconds>s (default: newest)")
        p.add_argument("--bbox", required=name in ("zoom", "track"), help="x1,y1,x2,y2 in pixels of the image")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--budget", type=float, default=120.0, help="time budget in seconds")
        if name in ("zoom", "segment"):
            p.add_argument("--out", help="write the tool's output image here")
        if name == "segment":
            p.add_argument("--point", help="x,y on the object")
        if name in ("segment", "track"):
            p.add_argument("--backend", help="segment: grabcut|sam2; track: csrt|kcf|mil|sam2")
            p.add_argument("--checkpoint", help="SAM 2 weights (.safetensors) for the sam2 backend")
        if name in ("track", "temporal"):
            p.add_argument("--start", default="0", help="first frame: index or <seconds>s")
            p.add_argument("--end", default="-1", help="last frame: index or <seconds>s")
        if name == "temporal":
            p.add_argument("--predicate", required=True, choices=["change", "appear", "disappear", "colour", "text", "motion_stop"])
            p.add_argument("--value", help="colour name / r,g,b, or the text to find")
        p.set_defaults(func=cmd_tools)

    p = sub.add_parser("run", help="run the agent on an image or video (the bundled model, a model folder or a script)")
    _add_inputs(p)
    p.add_argument("--query", required=True)
    p.add_argument("--trace", help="a CoTA trace file replayed by the ScriptedPolicy instead of a model")
    p.add_argument("--model", help="a model folder (default: the bundled models/pixelis-small)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "tensorrt"], help="backend serving the model")
    p.add_argument("--out", default="out/run", help="folder for trace.json and annotated.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="the built-in demo: zoom -> OCR -> answer on a generated scene")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sim", action="store_true", help="skip the simulator episodes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks (JSON)").add_subparsers(dest="bench", required=True)
    p = bench.add_parser("tools", help="median latency per tool on this machine")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_tools)
    p = bench.add_parser("sim", help="simulator speed: scene generation + RGB-D render, task generation per family")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_sim)
    add_policy_bench(bench)
    add_training_benches(bench)
    add_ttrl_bench(bench)

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

    add_sim_commands(sub)
    add_bag_commands(sub)
    add_node_commands(sub)
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
        if key not in ("steps", "sim_episodes"):
            print(f"{key}: {json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
