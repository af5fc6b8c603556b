"""Text the builder trains its BPE tokenizer on: CoTA traces as the policy will read and write them.

Two sources. A simulator export (``pixelis sim export``; a folder with ``episodes.jsonl`` or the
file itself) gives the real distribution: system prompt with the tool schemas, questions, expert
thoughts, calls, tool responses and answers. Without one, traces are generated from the grammar
(``cota.format``) and the tools' schemas (passed in by the caller; this module loads no tools)
with random but well-formed arguments, so a
tokenizer built offline still has merges for every tool name, argument key and JSON punctuation
the model will emit. Digits need no coverage: the pre-tokenizer splits them one by one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterator

from pixelis_ros.cota import Step, ToolCall, format, system_prompt


class CorpusError(ValueError):
    """The corpus path is missing or holds no usable episodes."""


WORDS = ("red blue green yellow white black orange purple square circle triangle sign cup box ball door "
         "left right above below near far small large text label number moving stops appears when where "
         "which colour how many objects the a of on in is to zoom read count track find").split()
COLOURS = ("red", "blue", "green", "yellow", "white", "black", "orange", "purple")


def _messages_text(messages: list[dict]) -> Iterator[str]:
    for msg in messages:
        content = msg.get("content", [])
        if isinstance(content, str):
            yield content
            continue
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def export_texts(path: Path) -> list[str]:
    """Texts of a simulator export: every message of every episode (the system prompt once)."""
    path = Path(path)
    jsonl = path / "episodes.jsonl" if path.is_dir() else path
    if not jsonl.is_file():
        raise CorpusError(f"no corpus at {jsonl}: pass a simulator export folder (pixelis sim export --out DIR) "
                          "or its episodes.jsonl")
    texts: list[str] = []
    seen_system: set[str] = set()
    with open(jsonl, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{jsonl}:{line_no} is not JSON ({e.msg}); is this a simulator export?") from None
            msgs = record.get("messages") or []
            if msgs and msgs[0].get("role") == "system":
                system = "\n".join(_messages_text(msgs[:1]))
                if system not in seen_system:
                    seen_system.add(system)
                    texts.append(system)
                msgs = msgs[1:]
            texts.extend(_messages_text(msgs))
            if isinstance(record.get("trace"), str):
                texts.append(record["trace"])
    if not texts:
        raise CorpusError(f"{jsonl} holds no episodes with messages; re-export with pixelis sim export")
    return texts


def _box(rng: random.Random, width: int = 640, height: int = 480) -> list[int]:
    x1, y1 = rng.randrange(0, width - 40), rng.randrange(0, height - 40)
    return [x1, y1, rng.randrange(x1 + 28, min(width, x1 + 300) + 1), rng.randrange(y1 + 28, min(height, y1 + 300) + 1)]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def _call(rng: random.Random, name: str, obs: int) -> tuple[ToolCall, dict]:
    image = rng.choice(["frame:-1", f"frame:{rng.randrange(8)}", f"frame:{rng.randrange(1, 30) / 10:g}s"]
                       + ([f"obs:{rng.randrange(obs)}"] if obs else []))
    box = _box(rng)
    if name == "zoom":
        return ToolCall(name, {"bbox_2d": box, "image": image}), {"bbox_2d": box, "size": [448, 336], "scale": 2.0,
                                                                   "images": [f"obs:{obs}"]}
    if name == "ocr":
        text = rng.choice(WORDS).upper() + str(rng.randrange(100))
        return ToolCall(name, {"image": image, "bbox_2d": box}), {"lines": [{"text": text, "bbox_2d": box, "score": 0.97}],
                                                                    "text": text}
    if name == "segment":
        args = {"image": image, "point_2d": [rng.randrange(640), rng.randrange(480)]} if rng.random() < 0.3 else \
            {"image": image, "bbox_2d": box}
        return ToolCall(name, args), {"image": image, "bbox_2d": box, "area": rng.randrange(200, 40000),
                                      "images": [f"obs:{obs}"]}
    if name == "track":
        return ToolCall(name, {"bbox_2d": box, "start": "frame:0", "end": "frame:-1"}), \
            {"boxes": [{"frame": k, "bbox_2d": _box(rng)} for k in range(3)], "lost": False}
    predicate = rng.choice(["change", "appear", "disappear", "colour", "text", "motion_stop"])
    args = {"predicate": predicate, "start": "frame:0", "end": "frame:-1"}
    if predicate in ("colour", "text"):
        args["value"] = rng.choice(COLOURS)
    return ToolCall(name, args), {"spans": [[round(rng.random() * 2, 2), round(2 + rng.random() * 2, 2)]]}


def grammar_texts(schemas: list[dict], n: int = 400, seed: int = 0) -> list[str]:
    """``n`` synthetic traces (plus the system prompt) from the grammar and the tools' ``schemas``
    (``Toolbox().schemas()``)."""
    if not schemas:
        raise CorpusError("synthetic traces need the tools' schemas (e.g. Toolbox().schemas()); got none")
    names = [s["function"]["name"] for s in schemas]
    rng = random.Random(seed)
    texts = [system_prompt(schemas)]
    for _ in range(n):
        steps = []
        for k in range(rng.randrange(1, 4)):
            call, response = _call(rng, rng.choice(names), k)
            steps.append(Step(think=_sentence(rng, rng.randrange(4, 12)), call=call,
                              response=json.dumps(response, ensure_ascii=False)))
        answer = rng.choice([rng.choice(COLOURS), str(rng.randrange(1000)), _sentence(rng, 3), f"{rng.random() * 10:.2f} s"])
        steps.append(Step(think=_sentence(rng, 5), answer=answer))
        texts.append(_sentence(rng, rng.randrange(5, 14)).rstrip(".") + "?")
        texts.append(format(steps))
    return texts


def corpus_texts(source: str | Path | None = None, seed: int = 0,
                 schemas: list[dict] | None = None) -> tuple[list[str], str]:
    """The corpus texts and a description of where they came from (for the model card).
    Without a ``source`` the traces are synthetic and ``schemas`` (the tools') are required."""
    if source is None:
        return grammar_texts(schemas or [], seed=seed), "synthetic CoTA traces generated from the grammar and the tool schemas"
    return export_texts(Path(source)), f"simulator export {source}"
