"""The episodes a policy got wrong, in one shape for ``pixelis sim bench`` and ``pixelis sim loop``
(``SimNodeCore``'s summary): whoever reads either report looks for the same fields, and a policy
scored in process and over the wire can be compared episode by episode."""

from __future__ import annotations

from typing import Iterable

FAILURE_KEYS = ("index", "family", "question", "truth", "answer", "hit", "error")
"""What each failure says: the episode (schedule index, family, question), the true and given
answers, whether the action hit a target, and the episode's error (None when it simply answered wrong)."""


def failures(results: Iterable[dict]) -> list[dict]:
    """``FAILURE_KEYS`` of each result row (which also holds ``correct``) answered wrong or off target."""
    return [{k: r[k] for k in FAILURE_KEYS} for r in results if not (r["correct"] and r["hit"])]
