"""ScriptedPolicy: replays a given CoTA trace turn by turn — for tests and demos only.

It is not a model: it ignores the images. ``<tool_response>`` blocks in the script are dropped
(the real tools run again); an answer may quote a field of the last tool response
(``<answer>{text}</answer>``, resolved by the agent), so a demo shows a tool's output flowing into
the answer. Turns are split at ``</tool_call>`` and ``</answer>`` without parsing, so a malformed script reaches
the agent as malformed model output would.
"""

from __future__ import annotations

import re

import numpy as np

from pixelis_ros.policy.base import Generation, PolicyError

_RESPONSE = re.compile(r"<tool_response>.*?</tool_response>", re.DOTALL)
_TURN_END = re.compile(r"(</tool_call>|</answer>)")


def split_turns(script: str) -> list[str]:
    text = _RESPONSE.sub("", script)
    pieces = _TURN_END.split(text)
    turns = [(body + end).strip() for body, end in zip(pieces[0::2], pieces[1::2])]
    if pieces[-1].strip():
        turns.append(pieces[-1].strip())  # trailing text without an end tag: let the parser say why
    return turns


class ScriptedPolicy:
    name = "scripted"

    def __init__(self, script: str):
        self.turns = split_turns(script)
        self.position = 0

    def reset(self) -> None:
        self.position = 0

    def generate(self, messages: list[dict], images: dict[str, np.ndarray]) -> Generation:
        if self.position >= len(self.turns):
            raise PolicyError(f"the scripted trace has no turn {self.position + 1} (it has {len(self.turns)})")
        turn = self.turns[self.position]
        self.position += 1
        return Generation(text=turn)
