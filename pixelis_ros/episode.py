"""Episode: what one query's run did — the auditable trace (every call, argument, result summary,
timing) and the final answer and action.

Tool results keep their arrays (images, masks) for rendering; ``to_json`` keeps only what a
person or a training pipeline needs to read, including each turn's text as the policy wrote it
(``raw_text``), so a turn the agent could not parse can still be read. The action is derived
from the last grounded box the episode produced, mapped to the pixels of the frame it came from
(seeing to acting).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pixelis_ros.boxes import round_box
from pixelis_ros.cota import MAX_TURN_CHARS, Step, clip, format as format_trace, valid_text
from pixelis_ros.tools.base import Detection, ToolResult, parse_image_ref


# Detections that say where the episode's subject is (OCR lines and the like only describe it).
GROUNDING_LABELS = ("zoom", "segment", "track", "temporal")


def kept_text(text) -> str | None:
    """A policy's turn as the trace keeps it: UTF-8-safe (lone surrogates replaced) and cut at
    ``MAX_TURN_CHARS``, the longest turn the agent parses (a longer one was refused as such)."""
    return valid_text(clip(text, MAX_TURN_CHARS)) if isinstance(text, str) else None


@dataclass
class StepRecord:
    turn: Step
    result: ToolResult | None = None
    image_refs: list[str] = field(default_factory=list)
    generate_ms: float = 0.0
    raw_text: str | None = None
    """The policy's turn exactly as it wrote it (``kept_text``), kept for every step, the
    unparseable ones too: the executed turn may differ (coordinates converted, a box refined by
    the heads) and a turn that could not be used is otherwise only its error."""
    heads: dict | None = None  # the auxiliary heads' verdict on the call (check / refine)
    finish_reason: str | None = None
    quoted: str | None = None  # an answer quoting a tool response field: the value it resolved to

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        if self.turn.think is not None:
            out["think"] = self.turn.think.strip()
        if self.turn.call is not None:
            out["call"] = self.turn.call.to_json()
        if self.turn.answer is not None:
            out["answer"] = self.turn.answer.strip()
        if self.quoted is not None:
            out["quoted"] = self.quoted
        if self.turn.error is not None:
            out["error"] = self.turn.error
        if self.turn.response is not None:
            out["response"] = json.loads(self.turn.response)
        if self.result is not None and self.result.error is None and self.result.model_keys is not None:
            out["data"] = self.result.data  # the tool's full output; the response showed part of it
        if self.image_refs:
            out["images"] = self.image_refs
        if self.raw_text is not None:
            out["raw_text"] = self.raw_text
        if self.heads is not None:
            out["heads"] = self.heads
        if self.finish_reason is not None:
            out["finish_reason"] = self.finish_reason
        out["generate_ms"] = round(self.generate_ms, 2)
        if self.result is not None:
            out["tool_ms"] = self.result.ms
        return out


def step_errors(steps: list[dict]) -> list[dict]:
    """``{"step", "error"}`` for each failed step of ``Episode.to_json()["steps"]``: a turn the agent
    could not use (the step's ``error``) or a tool call that failed (its response's ``error``).
    Works on the JSON because replays read it back from the recorded answer messages."""
    out = []
    for k, step in enumerate(steps):
        response = step.get("response")
        error = step.get("error") or (response.get("error") if isinstance(response, dict) else None)
        if error:
            out.append({"step": k, "error": error})
    return out


@dataclass
class Episode:
    query: str
    records: list[StepRecord] = field(default_factory=list)
    answer: str | None = None
    stop_reason: str = ""
    error: str | None = None
    frame_count: int = 0
    frame_span: tuple[float, float] | None = None
    total_ms: float = 0.0
    # obs:<k> -> (reference it was cut from, box it shows there, its own (width, height)).
    origins: dict[str, tuple[str, tuple[float, float, float, float], tuple[int, int]]] = field(default_factory=dict)

    @property
    def steps(self) -> list[Step]:
        return [r.turn for r in self.records]

    def trace_text(self) -> str:
        return format_trace(self.steps)

    def to_frame(self, det: Detection) -> tuple[str, tuple[float, float, float, float]]:
        """A detection's box in the pixels of the frame it ultimately comes from."""
        ref, box = det.image, det.bbox_2d
        for _ in range(len(self.origins) + 1):
            if parse_image_ref(ref)[0] == "frame" or ref not in self.origins:
                break
            src, (ox1, oy1, ox2, oy2), size = self.origins[ref]
            sx, sy = (ox2 - ox1) / size[0], (oy2 - oy1) / size[1]
            box = (ox1 + box[0] * sx, oy1 + box[1] * sy, ox1 + box[2] * sx, oy1 + box[3] * sy)
            ref = src
        return ref, box

    @property
    def detections(self) -> list[Detection]:
        return [d for r in self.records if r.result is not None and r.result.error is None for d in r.result.detections]

    @property
    def action(self) -> dict | None:
        """Point at the last grounded target: its box and centre in frame pixels."""
        grounded = [d for d in self.detections if d.label in GROUNDING_LABELS]
        if not grounded:
            return None
        ref, box = self.to_frame(grounded[-1])
        return {"type": "target", "image": ref, "bbox_2d": round_box(box),
                "point_2d": [round((box[0] + box[2]) / 2, 1), round((box[1] + box[3]) / 2, 1)]}

    def to_json(self) -> dict:
        calls = [r for r in self.records if r.turn.call is not None]
        return {
            "query": self.query,
            "answer": self.answer,
            "action": self.action,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "steps": [r.to_json() for r in self.records],
            "tool_errors": sum(1 for r in self.records if r.result is not None and r.result.error is not None),
            "invalid_turns": sum(1 for r in self.records if r.turn.error is not None),
            "chain_length": len(calls),
            "frames": {"count": self.frame_count, "span_s": list(self.frame_span) if self.frame_span else None},
            "timings_ms": {"total": round(self.total_ms, 2),
                           "generate": round(sum(r.generate_ms for r in self.records), 2),
                           "tools": round(sum(r.result.ms for r in self.records if r.result is not None), 2)},
            "trace": self.trace_text(),
        }
