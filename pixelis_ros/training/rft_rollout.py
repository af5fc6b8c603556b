"""CC-RFT rollouts: G complete episodes per scene through the ordinary ``Agent`` and ``Toolbox``,
with every generated turn recorded exactly as the policy saw it.

``SamplingPolicy`` wraps an ``HFPolicy``: each turn is sampled (text at ``temperature``; in
refine mode the grounding cell is drawn from the pointer's distribution at
``pointer_temperature``) and recorded as a ``TurnRecord`` — the messages and images the agent
showed (tool responses and returned crops included), the generated token ids and, when the
executed box came from the pointer, the sampled cell. The loss replays those records, so what
the model is trained on is what it acted on.

All trajectories of a group share the first prompt (same question, same frames), so their first
turns are sampled in one batched ``generate`` call of ``n = G`` and handed out one per episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixelis_ros.agent import Agent, AgentLimits
from pixelis_ros.cota import parse_turn
from pixelis_ros.episode import Episode
from pixelis_ros.policy.base import Generation


@dataclass
class TurnRecord:
    """One generated turn, replayable by the loss."""

    messages: list[dict]
    """The agent's messages before the turn (internal pixels), as it showed them."""
    images: dict[str, np.ndarray]
    """Every image those messages can name (frames and returned crops)."""
    token_ids: list[int]
    """The generated tokens (the turn the model wrote, before any refinement of its box)."""
    pointer: tuple[str, int, int] | None = None
    """(image ref, sampled cell, index of the ``<tool_call>`` token among ``token_ids``) when the
    executed box or point came from the pointer head."""
    pointer_entropy: float | None = None
    """Entropy of the tempered pointer distribution the cell was drawn from."""
    logprob: float = 0.0
    """Sum of the generated tokens' log-probabilities under the sampling distribution (confidence)."""


@dataclass
class Trajectory:
    episode: Episode
    turns: list[TurnRecord]
    reward: float = 0.0
    advantage: float = 0.0
    masked: bool = False  # truncated: kept in the group's statistics, out of the loss


class SamplingPolicy:
    """An ``HFPolicy`` that samples and records (the agent only sees ``generate``)."""

    name = "torch-sampling"

    def __init__(self, policy, temperature: float, pointer_temperature: float, max_new_tokens: int):
        self.policy = policy
        self.profile = policy.profile
        self.temperature, self.max_new_tokens = temperature, max_new_tokens
        self.pointer_temperature = pointer_temperature
        self.turns: list[TurnRecord] = []
        self._first: list[Generation] = []  # the group's batched first turns not yet handed out

    def start_group(self, size: int) -> None:
        self._first, self._group = [], size

    def reset(self) -> None:  # the agent calls it at the start of every episode
        self.turns = []

    def generate(self, messages: list[dict], images: dict[str, np.ndarray]) -> Generation:
        first = not any(m.get("role") == "assistant" for m in messages)
        self.policy.pointer_temperature = self.pointer_temperature if self.policy.heads is not None else 0.0
        try:
            if first:
                if not self._first:
                    self._first = self.policy.sample(messages, images, n=self._group, temperature=self.temperature,
                                                     max_new_tokens=self.max_new_tokens)
                gen = self._first.pop()
            else:
                gen = self.policy.sample(messages, images, n=1, temperature=self.temperature,
                                         max_new_tokens=self.max_new_tokens)[0]
        finally:
            self.policy.pointer_temperature = 0.0
        record = TurnRecord(list(messages), dict(images), list(gen.token_ids or []),
                            logprob=float(sum(gen.token_logprobs or [])))
        heads = gen.heads or {}
        if "cell_logprob" in heads and heads.get("refined"):
            call = parse_turn(gen.text).call
            if call is not None and ("bbox_2d" in call.arguments or "point_2d" in call.arguments):
                record.pointer = (heads["image"], int(heads["cell"]), int(heads["sampled_position"]))
                record.pointer_entropy = heads.get("pointer_entropy")
        self.turns.append(record)
        return gen


def rollout_group(sampler: SamplingPolicy, task, toolbox, size: int, max_steps: int) -> list[Trajectory]:
    """``size`` complete episodes of ``task`` (the same scene for all)."""
    sampler.start_group(size)
    agent = Agent(sampler, toolbox, AgentLimits(max_steps=max_steps))
    out = []
    for _ in range(size):
        episode = agent.run(task.question, task.frames)
        out.append(Trajectory(episode, sampler.turns))
    return out
