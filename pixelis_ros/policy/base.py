"""The Policy protocol: chat messages + the images they name -> the next assistant turn.

Messages use the Hugging Face content-list format with image placeholders
(``{"type": "image", "image": "frame:-1"}``); ``images`` maps each placeholder to its pixels so
a backend can feed them to its processor. A policy may return per-token log-probabilities (RL
and test-time RL need them); the agent does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class PolicyError(RuntimeError):
    """The policy could not produce a turn (model failure, exhausted script)."""


@dataclass
class Generation:
    text: str
    token_logprobs: list[float] | None = None


@runtime_checkable
class Policy(Protocol):
    name: str

    def generate(self, messages: list[dict], images: dict[str, np.ndarray]) -> Generation:
        """The next assistant turn, ending at ``</tool_call>`` or ``</answer>``."""
        ...
