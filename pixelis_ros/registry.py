"""One registry type for every plugin family: tools, their backends, policy backends, task families.

Each family used to keep its own dict and its own checks, so one refused a duplicate name and
another silently replaced it, and an unknown name surfaced as a bare ``KeyError`` in one place and
as a domain error in another. A ``Registry`` is a dict (``name in R``, ``sorted(R)``, ``R[name]``
keep working) whose unknown names raise the family's own error type listing the known names, and
whose ``register`` refuses a name twice. It imports nothing of ours, so any layer can use it.
"""

from __future__ import annotations

from typing import Any


class Registry(dict):
    """name -> plugin for one family; ``kind`` names the family in messages ("tool", "ocr backend")."""

    def __init__(self, kind: str, error: type[Exception] = LookupError):
        super().__init__()
        self.kind = kind
        self.error = error
        """Raised for an unknown name: the family's domain error (ToolError, PolicyError, ...)."""

    def register(self, name: str, plugin: Any = None) -> Any:
        """Add ``plugin`` under ``name``; without ``plugin``, a decorator that adds what it decorates."""
        if plugin is None:
            return lambda obj: self.register(name, obj)
        if name in self:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self[name] = plugin
        return plugin

    def __missing__(self, name: str) -> Any:
        raise self.error(self.unknown(name))

    def unknown(self, name: object) -> str:
        """The message for a name that is not registered (bounded: a name can come from a model)."""
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:80] + "…"
        return f"unknown {self.kind} {shown}; known: {', '.join(sorted(self))}"

    def check(self, names: list[str]) -> None:
        """Raise the family's error naming every name in ``names`` that is not registered."""
        missing = sorted(set(names) - set(self))
        if missing:
            raise self.error(f"unknown {self.kind}(s) {missing}; known: {', '.join(sorted(self))}")

