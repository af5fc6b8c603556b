"""The test-time memory: past queries, their frames' descriptors and their winning trajectories.

A query is embedded without the policy (the robot side serves on ONNX Runtime and the worker
must not add a forward pass per query): a cheap image descriptor of the newest frame (a thumbnail
of its local contrast, ``image_features``) next to a hashed bag of the question's words and word
pairs. Each part is L2-normalised, so the cosine similarity of two
queries weighs what they show and what they ask equally. Retrieval is exact k-nearest search
over the stored vectors (a few hundred entries: a matrix product).

Entries hold the exemplars of their vote (``TurnRecord``s with only the images their prompts
show) and the history of their vote's winners, for the TTRL-Guard check: a query that comes
back (similarity above ``same_item_similarity``) is the same item, and an item whose winner
keeps flipping is polarised. The memory is bounded in entries and in bytes; the oldest entries
go first.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from pixelis_ros.training.rft_rollout import TurnRecord

TEXT_DIMS = 256
IMAGE_SIDE = 16
CONTRAST_SIGMA = 8.0


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)


def text_features(question: str) -> np.ndarray:
    """Hashed counts of the question's words and adjacent word pairs (md5: stable across processes)."""
    words = re.findall(r"[a-z0-9]+", question.lower())
    v = np.zeros(TEXT_DIMS, np.float32)
    for token in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
        v[int.from_bytes(hashlib.md5(token.encode()).digest()[:4], "little") % TEXT_DIMS] += 1.0
    return _unit(v)


def image_features(image: np.ndarray) -> np.ndarray:
    """A 16x16 thumbnail of the frame's local contrast (|image - its blur|, per channel), mean removed.

    Measured on the shifted suite: a plain colour thumbnail or a colour histogram scores two
    different scenes of one room at 0.85-0.98 (walls and floor dominate); this descriptor scores
    them at most 0.76 and the same frame under pixel noise at 0.999 or more."""
    import cv2

    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    pixels = rgb[..., :3].astype(np.float32)
    contrast = np.abs(pixels - cv2.GaussianBlur(pixels, (0, 0), CONTRAST_SIGMA))
    thumb = cv2.resize(contrast, (IMAGE_SIDE, IMAGE_SIDE), interpolation=cv2.INTER_AREA)
    return _unit((thumb - thumb.mean()).ravel())


def embed(question: str, image: np.ndarray) -> np.ndarray:
    """The query's vector (unit length): image descriptor and question, equally weighted."""
    return _unit(np.concatenate([image_features(image), text_features(question)]))


def record_bytes(turn: TurnRecord) -> int:
    return sum(int(img.nbytes) for img in turn.images.values()) + 64 * len(turn.token_ids) + 2048


def slim(turn: TurnRecord) -> TurnRecord:
    """The record with only the images its prompt shows (a clip's other frames are not needed)."""
    from pixelis_ros.policy.prompt import image_refs

    shown = set(image_refs(turn.messages))
    return TurnRecord(turn.messages, {k: v for k, v in turn.images.items() if k in shown}, turn.token_ids,
                      turn.pointer, turn.pointer_entropy)


@dataclass
class Entry:
    """One remembered query."""

    key: int
    """Insertion number (stable id in saved state)."""
    question: str
    vector: np.ndarray
    exemplars: list[TurnRecord] = field(default_factory=list)
    """Turns of the winning trajectories (empty when the item never reached consensus)."""
    winners: list[str] = field(default_factory=list)
    """The vote's winning answer each time this item was seen ('' for a split vote)."""

    @property
    def flips(self) -> int:
        decided = [w for w in self.winners if w]
        return sum(a != b for a, b in zip(decided, decided[1:]))

    @property
    def nbytes(self) -> int:
        return int(self.vector.nbytes) + sum(record_bytes(t) for t in self.exemplars) + 256


class Memory:
    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.entries: list[Entry] = []
        self.next_key = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    def similarities(self, vector: np.ndarray) -> np.ndarray:
        if not self.entries:
            return np.zeros(0, np.float32)
        return np.stack([e.vector for e in self.entries]) @ vector

    def nearest(self, vector: np.ndarray, k: int, min_similarity: float, exclude: int | None = None) -> list[Entry]:
        """Up to ``k`` entries with exemplars, most similar first, above ``min_similarity``."""
        sims = self.similarities(vector)
        order = np.argsort(-sims, kind="stable")
        out = [self.entries[i] for i in order if sims[i] >= min_similarity and self.entries[i].exemplars
               and self.entries[i].key != exclude]
        return out[:k]

    def same_item(self, vector: np.ndarray, threshold: float) -> Entry | None:
        sims = self.similarities(vector)
        if len(sims) == 0 or float(sims.max()) < threshold:
            return None
        return self.entries[int(np.argmax(sims))]

    def add(self, question: str, vector: np.ndarray) -> Entry:
        entry = Entry(self.next_key, question, vector)
        self.next_key += 1
        self.entries.append(entry)
        self._evict()
        return entry

    def set_exemplars(self, entry: Entry, turns: list[TurnRecord]) -> None:
        entry.exemplars = [slim(t) for t in turns]
        self._evict()

    def _evict(self) -> None:
        while self.entries and (len(self.entries) > self.max_entries or self.nbytes > self.max_bytes):
            self.entries.pop(0)
