"""What a fuzz target is: a seeded case generator and a runner for one part of the code.

A target builds its fixed inputs once per worker process (``setup``: frames, small bags, a tiny
model folder), then turns a seeded ``random.Random`` into a ``Case`` (``make``) and feeds it to
the code under test (``run``). ``run`` returns the error messages a user would see (for the
length check) and raises what the code raised; the worker classifies it against
``domain_errors``. A failure the code only caught as a last line of defence (an episode stopped
with ``internal_error``) is raised as ``Escaped`` so it counts as internal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUMMARY_CHARS = 160


class Escaped(Exception):
    """A failure that did not propagate but is still an internal error (e.g. an episode's
    ``internal_error`` stop reason, or a published message that cannot be encoded)."""


def short(value: Any, limit: int = SUMMARY_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters with its total length, for reports."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        text = repr(value[: limit // 2])
        return text if len(value) <= limit // 2 else f"{text}... ({len(value)} bytes)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


@dataclass
class Case:
    kind: str
    """The mutation family (``huge_int``, ``png_forged_dims``, ...): failures are grouped by it."""
    summary: str
    """A short repr of the input for reports (at most a few hundred characters)."""
    data: Any
    """What ``run`` needs."""


class Target:
    name = ""
    domain_errors: tuple[type[BaseException], ...] = ()

    def setup(self, workdir: Path) -> None:
        """Build the fixed inputs (called once per worker, before any case)."""

    def make(self, rng: random.Random) -> Case:
        raise NotImplementedError

    def run(self, case: Case) -> list[str]:
        """Feed the case to the code under test; the user-visible error messages it produced."""
        raise NotImplementedError
