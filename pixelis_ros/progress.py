"""Progress bars of the long-running commands, all on one rule so that scripts can rely on it.

A bar is for a person watching a terminal, so:

- it is written to stderr, never stdout: stdout carries the command's result (JSON with ``--json``);
- it is off when the command was given ``--json`` (a program is reading; it may capture stderr
  too) or ``--quiet``;
- it is off when stderr is not a terminal: in a log file or a pipe a bar is a stream of
  carriage returns.

The ``pixelis`` entry point states the command-line half once (``configure``); library loops
call ``progress`` without a flag threaded through every signature. A caller may still decide:
``enabled=False`` for a loop that must stay silent (a benchmark's timed run, a non-main training
process), ``enabled=True`` to force a bar (tests of the bar itself).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

_wanted = True  # False once the command line said --json or --quiet


class Bar(Protocol):
    """The part of ``tqdm`` the loops use."""

    def __iter__(self) -> Iterator[Any]: ...

    def update(self, n: float = 1) -> Any: ...

    def set_postfix(self, **values: Any) -> None: ...

    def close(self) -> None: ...


class _NoBar:
    """A switched-off bar: the same calls, no output, and no tqdm import (nor need for it)."""

    def __init__(self, iterable: Iterable[Any] | None):
        self._iterable = iterable if iterable is not None else ()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._iterable)

    def update(self, n: float = 1) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def configure(*, json: bool = False, quiet: bool = False) -> None:
    """Record the command line's say: ``--json`` or ``--quiet`` turn every bar off."""
    global _wanted
    _wanted = not (json or quiet)


def bars_on() -> bool:
    """Whether a bar shows, by the rule above."""
    return _wanted and sys.stderr is not None and sys.stderr.isatty()


def progress(iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str | None = None,
             enabled: bool | None = None, **options: Any) -> Bar:
    """A tqdm bar on stderr over ``iterable`` (or updated by hand with ``total``) when ``enabled``
    (default: ``bars_on()``); else a bar that prints nothing. ``options`` go to tqdm (``initial``...)."""
    if not (bars_on() if enabled is None else enabled):
        return _NoBar(iterable)
    try:
        from tqdm import tqdm
    except ImportError:  # a bar is a nicety: a minimal install runs the same commands without one
        return _NoBar(iterable)
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, **options)


def add_quiet_flag(p: argparse.ArgumentParser, *aliases: str) -> None:
    """``--quiet`` on a command that shows bars (``aliases``: older spellings kept working)."""
    p.add_argument("--quiet", *aliases, dest="quiet", action="store_true",
                   help="no progress bar on stderr (also off with --json or when stderr is not a terminal)")
