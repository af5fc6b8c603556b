"""ScriptedPolicy: replays a given CoTA trace turn by turn — for tests and demos only.

It is not a model: it ignores the images. ``<tool_response>`` blocks in the script are dropped
(the real tools run again); an answer may quote a field of the last tool response
(``<answer>{text}</answer>``, resolved by the agent), so a demo shows a tool's output flowing into
the answer. Turns are split at ``</tool_call>`` and ``</answer>`` without parsing, so a malformed script reaches
the agent as malformed model output would.

Scripts arrive from queries (``accept_scripts``), so they are untrusted: splitting is linear
(fixed-string scans; a lazy ``<tool_response>.*?</tool_response>`` regex rescans the rest of the
script from every unclosed opener), the size is capped at ``MAX_SCRIPT_CHARS``, and a bad script
never raises from the constructor — the first ``generate`` raises ``PolicyError``, which the
agent turns into a ``policy_error`` episode.
"""

from __future__ import annotations

import re

import numpy as np

from pixelis_ros.policy.base import Generation, PolicyError

MAX_SCRIPT_CHARS = 1024 * 1024
"""Longest script accepted (a simulator expert trace is a few KB)."""

_RESPONSE_OPEN, _RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
_TURN_END = re.compile(r"(</tool_call>|</answer>)")  # fixed alternatives: linear


def drop_responses(script: str) -> str:
    """``script`` without its closed ``<tool_response>...</tool_response>`` blocks (an unclosed
    one stays, for the parser to report)."""
    out, pos = [], 0
    while (start := script.find(_RESPONSE_OPEN, pos)) >= 0:
        end = script.find(_RESPONSE_CLOSE, start + len(_RESPONSE_OPEN))
        if end < 0:
            break  # no closer after this opener, so none after any later one either
        out.append(script[pos:start])
        pos = end + len(_RESPONSE_CLOSE)
    out.append(script[pos:])
    return "".join(out)


def split_turns(script: str) -> list[str]:
    pieces = _TURN_END.split(drop_responses(script))
    turns = [(body + end).strip() for body, end in zip(pieces[0::2], pieces[1::2])]
    if pieces[-1].strip():
        turns.append(pieces[-1].strip())  # trailing text without an end tag: let the parser say why
    return turns


class ScriptedPolicy:
    name = "scripted"

    def __init__(self, script: str):
        self.error: str | None = None
        self.turns: list[str] = []
        if not isinstance(script, str):
            self.error = f"the script must be text, got {type(script).__name__}"
        elif len(script) > MAX_SCRIPT_CHARS:
            self.error = f"the script has {len(script)} characters, over the limit of {MAX_SCRIPT_CHARS}"
        else:
            self.turns = split_turns(script)
        self.position = 0

    def reset(self) -> None:
        self.position = 0

    def generate(self, messages: list[dict], images: dict[str, np.ndarray]) -> Generation:
        if self.error is not None:
            raise PolicyError(self.error)
        if self.position >= len(self.turns):
            raise PolicyError(f"the scripted trace has no turn {self.position + 1} (it has {len(self.turns)})")
        turn = self.turns[self.position]
        self.position += 1
        return Generation(text=turn)
