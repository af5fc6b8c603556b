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
placeholders for training; tool schemas come from each tool's typed ``Args`` dataclass.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pixelis_ros.tools.arguments import json_schema

_BLOCK = re.compile(r"<(think|tool_call|tool_response|answer)>(.*?)</\1>", re.DOTALL)
_OPEN = re.compile(r"<(think|tool_call|tool_response|answer)>")
TAGS = ("think", "tool_call", "tool_response", "answer")


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


def _parse_call(body: str) -> tuple[ToolCall | None, str | None]:
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, RecursionError) as e:
        return None, f"tool call is not valid JSON: {getattr(e, 'msg', e)} (at char {getattr(e, 'pos', '?')})"
    if not isinstance(obj, dict):
        return None, f"tool call must be a JSON object with 'name' and 'arguments', got {type(obj).__name__}"
    extra = sorted(set(obj) - {"name", "arguments"})
    if extra:
        return None, f"tool call has unexpected key(s) {extra}; expected 'name' and 'arguments'"
    if not isinstance(obj.get("name"), str):
        return None, "tool call needs a string 'name'"
    args = obj.get("arguments", {})
    if not isinstance(args, dict):
        return None, f"tool call 'arguments' must be a JSON object, got {type(args).__name__}"
    return ToolCall(obj["name"], args), None


def _strip_nl(body: str) -> str:
    if body.startswith("\n"):
        body = body[1:]
    return body[:-1] if body.endswith("\n") else body


def parse(text: str) -> Trace:
    """Parse a whole trace. Never raises; problems are returned in ``Trace.errors``."""
    trace = Trace()
    if not isinstance(text, str):
        trace.errors.append(ParseError(0, f"expected text, got {type(text).__name__}"))
        return trace
    current = Step()
    pos = 0
    for m in _BLOCK.finditer(text):
        gap = text[pos:m.start()]
        if gap.strip():
            trace.errors.append(ParseError(pos, f"unexpected text outside tags: {gap.strip()[:60]!r}"))
        pos = m.end()
        tag, body = m.group(1), m.group(2)
        if _OPEN.search(body):
            trace.errors.append(ParseError(m.start(), f"<{tag}> contains another opening tag"))
            continue
        if tag == "think":
            if current.think is not None:
                trace.errors.append(ParseError(m.start(), "two <think> blocks in one turn"))
            current.think = body
        elif tag == "tool_call":
            call, err = _parse_call(_strip_nl(body))
            if err:
                trace.errors.append(ParseError(m.start(), err))
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
                trace.errors.append(ParseError(m.start(), "<tool_response> must directly follow a <tool_call>"))
            else:
                last.response = _strip_nl(body)
    tail = text[pos:]
    if tail.strip():
        opened = _OPEN.search(tail)
        what = f"unclosed <{opened.group(1)}>" if opened else f"unexpected text outside tags: {tail.strip()[:60]!r}"
        trace.errors.append(ParseError(pos, what))
    if current.think is not None:
        trace.errors.append(ParseError(len(text), "a <think> is not followed by a <tool_call> or an <answer>"))
    return trace


def parse_turn(text: str) -> Step:
    """Parse one model generation into a Step; ``step.error`` says what is wrong, if anything.

    Generation stops at ``</tool_call>``/``</answer>``; a missing closing tag at the very end is
    tolerated because some runtimes strip the stop string.
    """
    if not isinstance(text, str):
        return Step(error=f"expected text, got {type(text).__name__}")
    stripped = text.rstrip()
    for tag in ("tool_call", "answer"):
        if re.search(rf"<{tag}>(?:(?!</{tag}>).)*$", stripped, re.DOTALL) and not stripped.endswith(f"</{tag}>"):
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
    for key in path.split("."):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            have = sorted(value)[:12] if isinstance(value, dict) else (f"{len(value)} items" if isinstance(value, list) else "a value")
            return None, f"the answer quotes {{{path}}}, but the last tool response has no '{key}' there (it has {have})"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > MAX_QUOTE_CHARS:
        return None, f"the answer quotes {{{path}}}, a value of {len(text)} characters (at most {MAX_QUOTE_CHARS})"
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


def tool_schema(tool_cls: Any) -> dict:
    """Qwen/OpenAI function schema of a registered tool class."""
    return {"type": "function", "function": {"name": tool_cls.name, "description": tool_cls.description,
                                             "parameters": json_schema(tool_cls.Args)}}


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


_RESPONSE = re.compile(r"<tool_response>\n(.*)\n</tool_response>", re.DOTALL)


def last_tool_response(messages: list[dict]) -> dict:
    """The JSON of the most recent ``<tool_response>`` in chat messages ({} when there is none)."""
    for msg in reversed(messages):
        for part in msg.get("content", []):
            m = _RESPONSE.search(part.get("text", "") if isinstance(part, dict) else "")
            if m:
                try:
                    obj = json.loads(m.group(1))
                except json.JSONDecodeError:
                    return {}
                return obj if isinstance(obj, dict) else {}
    return {}

