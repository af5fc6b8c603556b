"""The Chain-of-Thought-Action (CoTA) grammar: Qwen-native tool calls (DESIGN §4.1).

A trace is a sequence of blocks, one per line-separated turn::

    <think>...</think>
    <tool_call>
    {"name": "zoom", "arguments": {"bbox_2d": [x1, y1, x2, y2], "image": "frame:-1"}}
    </tool_call>
    <tool_response>
    {...}
    </tool_response>
    <answer>...</answer>

An answer may *quote* a field of the last tool response instead of retyping it:
``<answer>{text}</answer>``, ``<answer>{lines.1.text}</answer>``, ``<answer>{spans.0.0}</answer>``
(dot-separated keys and list indices). The agent resolves the quote against the JSON the policy
was shown; the trace keeps both. A policy then copies a tool's output by naming where it is — a
one-token choice — instead of reproducing its characters, which a small model does poorly (the
same reason grounding goes through the pointer head rather than generated digits).

``parse`` turns text into ``Step`` s and never raises: malformed parts become ``ParseError`` s
with an offset and a message. ``format`` is its inverse for canonical traces
(``format(parse(x).steps) == x``). ``to_messages`` renders an episode as chat messages with image
placeholders for training; tool schemas are passed in (``tools.arguments.tool_schema`` derives
them from each tool's typed ``Args`` dataclass).

This module is a leaf: it imports nothing of ours, so the grammar loads without the tools and
OpenCV, and everything that quotes model input in an error uses its ``quote``/``clip``.

Model output is untrusted. Parsing is linear in the text (fixed-string scans, no backtracking
patterns), inputs are capped (``MAX_TURN_CHARS``, ``MAX_TRACE_CHARS``), integers in a call are
capped in digits (``MAX_NUMBER_DIGITS``; Python refuses ``int()`` past 4,300 digits), and text is
made valid Unicode: lone surrogates become U+FFFD in text and are refused inside call JSON, so
nothing downstream fails to encode an answer as UTF-8.
"""

from __future__ import annotations

import json
import re
import reprlib
import unicodedata
from dataclasses import dataclass, field
from typing import Any

TAGS = ("think", "tool_call", "tool_response", "answer")
_OPEN = re.compile(r"<(think|tool_call|tool_response|answer)>")
_CLOSE = re.compile(r"</(think|tool_call|tool_response|answer)>")
_SURROGATE = re.compile("[\ud800-\udfff]")

MAX_TURN_CHARS = 64 * 1024
"""Longest single model turn ``parse_turn`` accepts (a generation is bounded by its token cap)."""
MAX_TRACE_CHARS = 1024 * 1024
"""Longest whole trace ``parse`` accepts (8 steps with tool responses are a few KB)."""
MAX_NUMBER_DIGITS = 100
"""Most digits an integer in a tool call may have (pixel numbers have a handful)."""
QUOTE_CHARS = 200
"""How much of an input an error message quotes before cutting it with an ellipsis."""


# --- bounded quoting: the one helper every error message uses to echo input -------------------

class _BoundedRepr(reprlib.Repr):
    """``reprlib`` that never calls ``repr`` on an integer Python refuses to print."""

    def repr_int(self, x, level):
        if x.bit_length() > 128:  # ~39 digits: say how big instead of printing it
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return repr(x)


_REPR = _BoundedRepr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 12, 6, 8, 6
_REPR.maxstring, _REPR.maxother = 40, 60


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis and the original length when cut."""
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for an error message, bounded: strings cut at ``limit`` characters (with
    an ellipsis and the length), containers at a few items, huge integers described."""
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"
    text = _REPR.repr(value)
    if len(text) > limit:
        size = f"{len(value)} items" if isinstance(value, (list, tuple, dict, set)) else f"{len(text)} characters"
        text = f"{text[:limit]}... ({size})"
    return text


def valid_text(text: str) -> str:
    """``text`` with lone surrogates (from ``\\ud800`` escapes or bad decoding) replaced by U+FFFD,
    so it always encodes as UTF-8."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")  # letters that draw nothing


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: only spaces, control, format (zero-width) characters or
    lone combining marks."""
    for ch in text:
        if ch.isspace() or ch in _BLANK_LETTERS:
            continue
        if unicodedata.category(ch)[0] not in "CZM":
            return False
    return True


@dataclass
class ToolCall:
    name: str
    arguments: dict

    def to_json(self) -> dict:
        return {"name": self.name, "arguments": self.arguments}


@dataclass
class ParseError:
    offset: int
    message: str


@dataclass
class Step:
    """One assistant turn (optional thought, then a call or an answer) and, for a call, the
    tool's response. Bodies are kept exactly as written so formatting round-trips."""

    think: str | None = None
    call: ToolCall | None = None
    answer: str | None = None
    response: str | None = None
    error: str | None = None  # why this turn could not be used (set for bad model output)


@dataclass
class Trace:
    steps: list[Step] = field(default_factory=list)
    errors: list[ParseError] = field(default_factory=list)


class _NumberTooLong(ValueError):
    pass


def _parse_int(digits: str) -> int:
    """JSON integers, refusing the absurdly long ones before ``int()`` does with its own error."""
    if len(digits) > MAX_NUMBER_DIGITS + 1:  # + 1 for a sign
        raise _NumberTooLong(f"tool call holds an integer of {len(digits.lstrip('-'))} digits; numbers in a call "
                             f"have at most {MAX_NUMBER_DIGITS} digits")
    return int(digits)


def _has_surrogate(obj: Any) -> bool:
    """Whether any string (key or value) in decoded JSON holds a lone surrogate; iterative, so
    any depth ``json.loads`` accepted is safe."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _parse_call(body: str) -> tuple[ToolCall | None, str | None]:
    try:
        obj = json.loads(body, parse_int=_parse_int)
    except _NumberTooLong as e:
        return None, str(e)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        return None, f"tool call is not valid JSON: {clip(getattr(e, 'msg', str(e)))} (at char {getattr(e, 'pos', '?')})"
    if not isinstance(obj, dict):
        return None, f"tool call must be a JSON object with 'name' and 'arguments', got {type(obj).__name__}"
    extra = sorted(set(obj) - {"name", "arguments"})
    if extra:
        return None, f"tool call has unexpected key(s) {quote(extra)}; expected 'name' and 'arguments'"
    if not isinstance(obj.get("name"), str):
        return None, "tool call needs a string 'name'"
    args = obj.get("arguments", {})
    if not isinstance(args, dict):
        return None, f"tool call 'arguments' must be a JSON object, got {type(args).__name__}"
    if _has_surrogate(obj):
        return None, "tool call holds a lone surrogate escape (like \\ud800) in a string; strings must be valid Unicode"
    return ToolCall(obj["name"], args), None


def _strip_nl(body: str) -> str:
    if body.startswith("\n"):
        body = body[1:]
    return body[:-1] if body.endswith("\n") else body


def _blocks(text: str):
    """``(start, end, tag, body)`` of each ``<tag>body</tag>`` block, leftmost first and
    non-overlapping, in linear time.

    Same blocks as ``re.finditer(r"<(tag)>(.*?)</\\1>", text, re.DOTALL)``, whose lazy body
    rescans to the end of the text from every unclosed opener (quadratic, and it holds the GIL):
    here every opener and closer is found once, and each tag's closers are consumed in order.
    """
    closes: dict[str, list[int]] = {t: [] for t in TAGS}
    for m in _CLOSE.finditer(text):
        closes[m.group(1)].append(m.start())
    next_close = dict.fromkeys(TAGS, 0)
    pos = 0
    for m in _OPEN.finditer(text):
        if m.start() < pos:
            continue  # inside the previous block
        tag, cl = m.group(1), closes[m.group(1)]
        k = next_close[tag]
        while k < len(cl) and cl[k] < m.end():
            k += 1
        next_close[tag] = k
        if k == len(cl):
            continue  # never closed: like the regex, try later openers
        pos = cl[k] + len(tag) + 3
        yield m.start(), pos, tag, text[m.end():cl[k]]


def parse(text: str) -> Trace:
    """Parse a whole trace. Never raises; problems are returned in ``Trace.errors``."""
    trace = Trace()
    if not isinstance(text, str):
        trace.errors.append(ParseError(0, f"expected text, got {type(text).__name__}"))
        return trace
    if len(text) > MAX_TRACE_CHARS:
        trace.errors.append(ParseError(0, f"the trace has {len(text)} characters, over the limit of {MAX_TRACE_CHARS}"))
        return trace
    text = valid_text(text)
    current = Step()
    pos = 0
    for start, end, tag, body in _blocks(text):
        gap = text[pos:start]
        if gap.strip():
            trace.errors.append(ParseError(pos, f"unexpected text outside tags: {quote(gap.strip(), 60)}"))
        pos = end
        if _OPEN.search(body):
            trace.errors.append(ParseError(start, f"<{tag}> contains another opening tag"))
            continue
        if tag == "think":
            if current.think is not None:
                trace.errors.append(ParseError(start, "two <think> blocks in one turn"))
            current.think = body
        elif tag == "tool_call":
            call, err = _parse_call(_strip_nl(body))
            if err:
                trace.errors.append(ParseError(start, err))
                current.error = err
            current.call = call
            trace.steps.append(current)
            current = Step()
        elif tag == "answer":
            current.answer = body
            trace.steps.append(current)
            current = Step()
        else:  # tool_response
            last = trace.steps[-1] if trace.steps else None
            if current.think is not None or last is None or last.answer is not None or last.response is not None:
                trace.errors.append(ParseError(start, "<tool_response> must directly follow a <tool_call>"))
            else:
                last.response = _strip_nl(body)
    tail = text[pos:]
    if tail.strip():
        opened = _OPEN.search(tail)
        what = f"unclosed <{opened.group(1)}>" if opened else f"unexpected text outside tags: {quote(tail.strip(), 60)}"
        trace.errors.append(ParseError(pos, what))
    if current.think is not None:
        trace.errors.append(ParseError(len(text), "a <think> is not followed by a <tool_call> or an <answer>"))
    return trace


def parse_turn(text: str) -> Step:
    """Parse one model generation into a Step; ``step.error`` says what is wrong, if anything.

    Generation stops at ``</tool_call>``/``</answer>``; a missing closing tag at the very end is
    tolerated because some runtimes strip the stop string. An empty answer is an error the model
    sees, not a silent empty answer.
    """
    if not isinstance(text, str):
        return Step(error=f"expected text, got {type(text).__name__}")
    if len(text) > MAX_TURN_CHARS:
        return Step(error=f"the turn has {len(text)} characters, over the limit of {MAX_TURN_CHARS}")
    stripped = valid_text(text).rstrip()
    for tag in ("tool_call", "answer"):
        # An opener after the last closer of its tag is unclosed: close it (two rfinds, linear).
        if stripped.rfind(f"<{tag}>") > stripped.rfind(f"</{tag}>"):
            stripped += f"</{tag}>"
    trace = parse(stripped)
    turns = trace.steps
    if not turns:
        detail = f" ({trace.errors[0].message})" if trace.errors and _OPEN.search(stripped) else ""
        return Step(error="no <tool_call> or <answer> in the output" + detail)
    step = turns[0]
    if step.error is None and trace.errors:
        step.error = trace.errors[0].message
    if step.error is None and len(turns) > 1:
        step.error = "more than one <tool_call>/<answer> in one turn; only one is allowed"
    if step.error is None and step.answer is not None and is_blank(step.answer):
        step.error = ("the answer is empty: write it inside <answer></answer>" if not step.answer.strip() else
                      "the answer has no visible characters (only zero-width or control characters)")
    return step


_QUOTE = re.compile(r"\{([A-Za-z_]\w*(?:\.\w+)*)\}")
MAX_QUOTE_CHARS = 200


def answer_quote(answer: str) -> str | None:
    """The field path an answer quotes (``"{lines.0.text}"`` -> ``"lines.0.text"``), or None."""
    m = _QUOTE.fullmatch(answer.strip()) if isinstance(answer, str) else None
    return m.group(1) if m else None


def resolve_quote(path: str, response: dict) -> tuple[str | None, str | None]:
    """``(value as text, None)`` for the field ``path`` names in ``response``, else ``(None, why)``."""
    value: Any = response
    shown = clip(path, 80)
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        # ASCII digits only, and few of them: int() refuses '²' and numbers of 4,300+ digits.
        elif isinstance(value, list) and key.isascii() and key.isdigit() and len(key) < 10 and int(key) < len(value):
            value = value[int(key)]
        else:
            have = quote(sorted(value)[:12]) if isinstance(value, dict) else (f"{len(value)} items" if isinstance(value, list) else "a value")
            return None, f"the answer quotes {{{shown}}}, but the last tool response has no '{clip(key, 80)}' there (it has {have})"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > MAX_QUOTE_CHARS:
        return None, f"the answer quotes {{{shown}}}, a value of {len(text)} characters (at most {MAX_QUOTE_CHARS})"
    return text, None


def format_call(call: ToolCall) -> str:
    return json.dumps(call.to_json(), ensure_ascii=False)


def format_turn(step: Step) -> str:
    """The assistant's text for one turn (no tool response)."""
    parts = []
    if step.think is not None:
        parts.append(f"<think>{step.think}</think>")
    if step.call is not None:
        parts.append(f"<tool_call>\n{format_call(step.call)}\n</tool_call>")
    elif step.answer is not None:
        parts.append(f"<answer>{step.answer}</answer>")
    return "\n".join(parts)


def format_response(body: str) -> str:
    return f"<tool_response>\n{body}\n</tool_response>"


def format(steps: list[Step]) -> str:  # noqa: A001 - the grammar's natural name
    """Canonical trace text; the inverse of ``parse`` for valid traces."""
    parts = []
    for step in steps:
        parts.append(format_turn(step))
        if step.call is not None and step.response is not None:
            parts.append(format_response(step.response))
    return "\n".join(parts)


SYSTEM_PROMPT = """You are Pixelis, a robot's vision assistant that reasons by acting on pixels.
Think inside <think></think>, then either call one tool or give the final answer inside <answer></answer>; an answer may quote a field of the last tool response, e.g. <answer>{{text}}</answer>.
Boxes are [x1, y1, x2, y2] in absolute pixels of the image the call names; images are named frame:<index> (frame:-1 = newest), frame:<seconds>s, or obs:<k> for the k-th image a tool returned.

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def system_prompt(schemas: list[dict]) -> str:
    return SYSTEM_PROMPT.format(tools="\n".join(json.dumps(s, ensure_ascii=False) for s in schemas))


def to_messages(query: str, steps: list[Step], schemas: list[dict], images: list[str] | None = None,
                step_images: list[list[str]] | None = None) -> list[dict]:
    """Chat messages (Hugging Face content-list format) with image placeholders.

    ``images`` are the references shown with the query (default the newest frame);
    ``step_images[i]`` the ``obs:<k>`` references step ``i``'s tool returned, shown with its
    response in a new user turn (DESIGN §2).
    """
    msgs: list[dict] = [{"role": "system", "content": [{"type": "text", "text": system_prompt(schemas)}]}]
    first = [{"type": "image", "image": ref} for ref in (images if images is not None else ["frame:-1"])]
    msgs.append({"role": "user", "content": first + [{"type": "text", "text": query}]})
    for i, step in enumerate(steps):
        msgs.append({"role": "assistant", "content": [{"type": "text", "text": format_turn(step)}]})
        if step.call is not None and step.response is not None:
            refs = step_images[i] if step_images and i < len(step_images) else []
            content = [{"type": "text", "text": format_response(step.response)}]
            content += [{"type": "image", "image": ref} for ref in refs]
            msgs.append({"role": "user", "content": content})
    return msgs


_RESPONSE_OPEN, _RESPONSE_CLOSE = "<tool_response>\n", "\n</tool_response>"


def last_tool_response(messages: list[dict]) -> dict:
    """The JSON of the most recent ``<tool_response>`` in chat messages ({} when there is none)."""
    for msg in reversed(messages):
        for part in msg.get("content", []):
            text = part.get("text", "") if isinstance(part, dict) else ""
            text = text if isinstance(text, str) else ""
            # From the first opener to the last closer of the part (two scans, not a regex).
            i, j = text.find(_RESPONSE_OPEN), text.rfind(_RESPONSE_CLOSE)
            if i >= 0 and j >= i + len(_RESPONSE_OPEN):
                try:
                    obj = json.loads(text[i + len(_RESPONSE_OPEN):j])
                except (ValueError, RecursionError):
                    return {}
                return obj if isinstance(obj, dict) else {}
    return {}
