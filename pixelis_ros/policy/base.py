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
    """The turn the agent executes (coordinates in internal pixels, ending at the stop tag)."""
    token_logprobs: list[float] | None = None
    """Log-probability of each generated token under the distribution it was drawn from."""
    token_ids: list[int] | None = None
    """The generated token ids (same length as ``token_logprobs``); RL recomputes losses on them."""
    raw_text: str | None = None
    """The text exactly as the model wrote it (its own coordinate convention, before any
    auxiliary-head refinement); None when it equals ``text``."""
    finish_reason: str | None = None
    """``stop`` (a stop tag), ``eos`` or ``length`` (max_new_tokens reached)."""
    heads: dict | None = None
    """Auxiliary heads' verdict on the call in check/refine mode (box, iou, agree, refined)."""


@runtime_checkable
class Policy(Protocol):
    name: str

    def generate(self, messages: list[dict], images: dict[str, np.ndarray]) -> Generation:
        """The next assistant turn, ending at ``</tool_call>`` or ``</answer>``."""
        ...
