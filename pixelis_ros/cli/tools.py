"""``pixelis tools zoom|ocr|segment|track|temporal``: one pixel tool on files.

Each tool's flags come from its ``Args`` dataclass (``tools/*.py``), so the command line cannot
drift from what the model may call: a field's ``metadata["doc"]`` is the help, a ``Literal`` gives
the choices, a tuple is typed as comma-separated numbers, a field without default is required.
Frame references (string fields defaulting to ``frame:...``) are typed as ``3``, ``-1`` or
``1.5s``. Three fields keep their short historical flag names (``FLAG_NAMES``). The flags that are
not tool arguments (inputs, ``--json``, ``--budget``, ``--out``, ``--backend``, ``--checkpoint``)
are written here.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Literal

from pixelis_ros.cli.inputs import UsageError, add_inputs, load
from pixelis_ros.progress import add_quiet_flag
from pixelis_ros.tools import TOOLS
from pixelis_ros.tools.arguments import strip_optional

TOOL_HELP = {"zoom": "crop and enlarge a region", "ocr": "read text", "segment": "segment an object",
             "track": "track an object through frames", "temporal": "find when something happens"}
"""The tools the command offers, in help order, with their one-line help."""

FLAG_NAMES = {"bbox_2d": "--bbox", "point_2d": "--point", "image": "--frame"}
"""Fields whose flag is not ``--<field-name>`` (``--image`` is the input file, so ``image`` is ``--frame``)."""

IMAGE_OUTPUT = ("zoom", "segment")
"""Tools whose output image ``--out`` can save."""

BACKEND_TOOLS = ("segment", "track")
"""Tools whose backend ``--backend``/``--checkpoint`` choose."""

PROGRESS_TOOLS = ("temporal",)
"""Tools whose scan over a long video shows a progress bar (``--quiet`` turns it off)."""

FRAME_PREFIX = "frame:"


@dataclasses.dataclass(frozen=True)
class Flag:
    """One tool argument on the command line."""

    field: str  # the Args field (the tool call's argument name)
    flag: str  # e.g. --bbox
    kind: str  # "numbers", "frame" or "value"
    size: int = 0  # how many numbers, for "numbers"

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


def _add_field(p: argparse.ArgumentParser, f: dataclasses.Field, tp: Any) -> Flag:
    """Add the flag of one Args field to ``p``; return how to turn its text back into the argument."""
    flag = FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
    doc, required = f.metadata.get("doc", ""), f.default is dataclasses.MISSING
    tp, _ = strip_optional(tp)
    if typing.get_origin(tp) is tuple:
        size = len(typing.get_args(tp))
        p.add_argument(flag, required=required, help=f"{doc}; {size} comma-separated numbers")
        return Flag(f.name, flag, "numbers", size)
    if tp is str and isinstance(f.default, str) and f.default.startswith(FRAME_PREFIX):
        default = f.default[len(FRAME_PREFIX):]
        p.add_argument(flag, default=default, help=f"{doc}; here: index or <seconds>s (default: {default})")
        return Flag(f.name, flag, "frame")
    if typing.get_origin(tp) is Literal:
        p.add_argument(flag, required=required, choices=list(typing.get_args(tp)), help=doc)
    elif tp in (str, int, float):
        p.add_argument(flag, required=required, type=tp, help=doc)
    else:
        raise TypeError(f"tool argument {f.name}: no command-line form for type {tp!r}")
    return Flag(f.name, flag, "value")


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
    return text if text.startswith(FRAME_PREFIX) else FRAME_PREFIX + text


def tool_call(args) -> tuple[str, dict]:
    """The tool call (name, JSON arguments) the parsed flags ``args`` stand for."""
    arguments: dict = {}
    for flag in args.tool_flags:
        text = getattr(args, flag.dest)
        if text is None:
            continue  # the Args default applies
        if flag.kind == "numbers":
            arguments[flag.field] = _numbers(text, flag.size, flag.flag)
        elif flag.kind == "frame":
            arguments[flag.field] = _frame_ref(text)
        else:
            arguments[flag.field] = text
    return args.tool, arguments


def cmd_tools(args) -> dict:
    from pixelis_ros.render import save_rgb
    from pixelis_ros.tools import ToolContext, Toolbox, ToolboxConfig

    config = ToolboxConfig(tool_time_budget_s=args.budget)
    if args.tool in BACKEND_TOOLS:
        backend = args.backend or getattr(config, f"{args.tool}_backend")
        options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
        config = dataclasses.replace(config, **{f"{args.tool}_backend": backend, f"{args.tool}_options": options})
    frames = load(args)
    name, arguments = tool_call(args)
    result = Toolbox(config).run(name, arguments, ToolContext(frames=frames, progress=True))
    if result.error is not None:
        raise UsageError(result.error)
    if getattr(args, "out", None) and result.images:
        save_rgb(args.out, result.images[0])
    return result.data | {"ms": result.ms}


def add_tools_commands(sub) -> None:
    """Add ``tools`` and one subcommand per tool to the main parser's subparsers ``sub``."""
    tools = sub.add_parser("tools", help="run one pixel tool on files").add_subparsers(dest="tool", required=True)
    for name, helptext in TOOL_HELP.items():
        args_cls = TOOLS[name].Args
        hints = typing.get_type_hints(args_cls)
        fields = dataclasses.fields(args_cls)
        p = tools.add_parser(name, help=helptext)
        add_inputs(p, image=any(f.name == "image" for f in fields))
        flags = [_add_field(p, f, hints[f.name]) for f in fields]
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--budget", type=float, default=120.0, help="time budget in seconds")
        if name in PROGRESS_TOOLS:
            add_quiet_flag(p)
        if name in IMAGE_OUTPUT:
            p.add_argument("--out", help="write the tool's output image here")
        if name in BACKEND_TOOLS:
            p.add_argument("--backend", help="segment: grabcut|sam2; track: csrt|kcf|mil|sam2")
            p.add_argument("--checkpoint", help="SAM 2 weights (.safetensors) for the sam2 backend")
        p.set_defaults(func=cmd_tools, tool_flags=flags)
