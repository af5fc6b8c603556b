"""Expert traces: ground truth picks the arguments, the real tools produce the observations.

A family writes its expert as a generator that yields turns and receives each tool's parsed
response, e.g.::

    def plan():
        r = yield turn("The sign is small; zoom in.", "zoom", bbox_2d=box)
        r = yield turn("Read it.", "ocr", image=r["images"][0])
        yield answer(r["text"])

``ExpertPolicy`` drives that generator from inside the ordinary ``Agent`` loop, so the trace,
the ``obs:<k>`` numbering and the error handling are exactly what a model's episode gets. When a
tool fails or reads wrongly, the trace records it: the expert's answer then comes from what the
tools said, so the oracle's accuracy is the ceiling the tools allow.
"""

from __future__ import annotations

import json
from typing import Callable, Generator

import numpy as np

from pixelis_ros.cota import last_tool_response
from pixelis_ros.policy.base import Generation, PolicyError

Plan = Generator[str, dict, None]


def turn(think: str, name: str, **arguments) -> str:
    call = json.dumps({"name": name, "arguments": arguments})
    return f"<think>{think}</think>\n<tool_call>\n{call}\n</tool_call>"


def answer(text: str, think: str | None = None) -> str:
    return (f"<think>{think}</think>\n" if think else "") + f"<answer>{text}</answer>"


class ExpertPolicy:
    name = "expert"

    def __init__(self, plan: Callable[[], Plan]):
        self.plan_factory = plan
        self.plan: Plan | None = None

    def reset(self) -> None:
        self.plan = None

    def generate(self, messages: list[dict], images: dict[str, np.ndarray]) -> Generation:
        try:
            if self.plan is None:
                self.plan = self.plan_factory()
                return Generation(next(self.plan))
            return Generation(self.plan.send(last_tool_response(messages)))
        except StopIteration:
            raise PolicyError("the expert plan ended without an answer") from None
