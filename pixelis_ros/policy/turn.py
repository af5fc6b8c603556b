"""What both backends do with a generated turn, whichever runtime produced its tokens.

The torch backend (transformers) and the ONNX backend (ONNX Runtime) differ only in how they
compute token ids and hidden states. What a turn *means* is decided here, once: where it ends (the
stop rule's index), why it ended, its text, the tool call mapped back from the backbone's
coordinate convention to internal pixels, and, with auxiliary heads, which image the heads look
at, their verdict, and in ``refine`` mode the executed box. Keeping it in one module is what makes
"the two backends agree" a property of the runtimes alone.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Callable

from pixelis_ros.policy.base import Generation, PolicyError
from pixelis_ros.policy.coords import Geometry, generated_call, lookup, with_call
from pixelis_ros.policy.heads_numpy import MODES, call_token_position, refine_arguments
from pixelis_ros.policy.stopping import StopRule


def check_options(cls, options: dict, backend: str):
    """``cls(**options)`` for a backend's options dataclass, unknown keys refused by name."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PolicyError(f"unknown option(s) {unknown} for the {backend} backend; known: {', '.join(sorted(known))}")
    return cls(**options)


def check_heads_mode(mode: str) -> None:
    if mode not in MODES:
        raise PolicyError(f"heads {mode!r}: use one of {', '.join(MODES)}")


def finish_turn(stop: StopRule, eos_ids: tuple[int, ...], tokenizer, ids: list[int],
                logprobs: list[float] | None) -> Generation:
    """The turn in ``ids`` cut at the stop rule: its text, ids, log-probabilities and finish reason
    (``stop`` at a stop string, ``eos`` at an end-of-turn token, ``length`` at the token cap)."""
    k = stop.stop_index(ids)
    end = k if k is not None else len(ids)
    reason = "length" if k is None else ("eos" if k < len(ids) and ids[k] in eos_ids else "stop")
    text = stop.cut(tokenizer.decode(ids[:end], skip_special_tokens=True))
    return Generation(text=text, token_logprobs=None if logprobs is None else list(logprobs[:end]),
                      token_ids=list(ids[:end]), finish_reason=reason)


def heads_target(tokenizer, token_ids: list[int], refs: list[str], ref: str,
                 geometries: dict[str, Geometry]) -> tuple[Geometry, int] | dict:
    """The geometry of the image the call names and the position of the token completing
    ``<tool_call>`` (the pointer's query), or the verdict that says why the heads cannot look."""
    g = lookup(geometries, ref)
    if ref not in refs or g is None:
        return {"error": f"the call names {ref}, which is not among the images shown ({refs})"}
    position = call_token_position(tokenizer, token_ids)
    if position is None:
        return {"error": "no <tool_call> token in the generation"}
    return g, position


def ground_call(gen: Generation, geometries: dict[str, Geometry], heads_mode: str,
                verdict: Callable[[str, dict], dict] | None) -> Generation:
    """``gen`` with its call in internal pixels. ``verdict(ref, arguments)`` runs the heads (``None``
    without heads); in ``refine`` mode the executed call takes their box. The model's own text is
    kept in ``raw_text`` whenever the executed text differs from it."""
    found = generated_call(gen.text, geometries)
    if found is None:
        return gen
    call, ref, arguments = found
    if verdict is not None:
        gen.heads = verdict(ref, arguments)
        if heads_mode == "refine":
            arguments = refine_arguments(arguments, gen.heads)
    if arguments == call.arguments and gen.heads is None:
        return gen  # no coordinates to convert
    gen.raw_text = gen.text
    gen.text = with_call(gen.text, call, arguments)
    return gen
