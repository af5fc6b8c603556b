"""CoTA episodes from a ``pixelis sim export`` folder as SFT examples: one forward per episode
teaches every assistant turn in context.

An example is the whole expert conversation exactly as the agent would have shown it to this
model: the prompt profile decides the query's images and whether the schema system prompt is
there, every ``<tool_response>`` is followed by the images that tool returned (``obs:<k>``, stored
by the export), and coordinates are in the backbone's convention (``policy.coords``). Only the
assistant turns are targets (everything else is label -100); per-token loss weights pick out a
call's operation name, its arguments and the answer. Each call with a box or a point also gives a
target for the auxiliary heads: the position of its ``<tool_call>`` token (the pointer's query),
the token run of the image the box is given in, and the box normalised to that image.

Token spans come from the processor's own offsets on the image-expanded text, so the labels line
up with what the model reads, whatever the tokenizer (ours or a released Qwen one).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from pixelis_ros.policy.coords import ResizeRule, box_image, convention, messages_to_model
from pixelis_ros.policy.profile import PromptProfile
from pixelis_ros.policy.prompt import CHANNELS_LAST, geometries, image_refs
from pixelis_ros.training.config import DatasetError

IMAGE_PAD = "<|image_pad|>"
_ASSISTANT = re.compile(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", re.DOTALL)
_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
_NAME = re.compile(r'"name":\s*"([^"]*)"')
_ARGUMENTS = re.compile(r'"arguments":\s*(\{.*\})\s*\}\s*$', re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
RECORD_FIELDS = ("id", "family", "question", "answer", "images", "image_files", "messages", "expert_correct")


@dataclass
class HeadTarget:
    """One call's grounding target in an example."""

    query: int  # token index of the call's <tool_call>
    image: int  # index of the named image among the example's images
    box: tuple[float, float, float, float] | None  # normalised to that image (x1 y1 x2 y2)
    point: tuple[float, float] | None
    time: tuple[float, float] | None = None  # start/end given in seconds, as fractions of the clip


@dataclass
class Example:
    id: str
    input_ids: torch.Tensor  # [T]
    labels: torch.Tensor  # [T], -100 where not a target
    weights: torch.Tensor  # [T], loss weight of each target token
    pixel_values: torch.Tensor | None
    image_grid_thw: torch.Tensor | None  # [I, 3]
    mm_token_type_ids: torch.Tensor | None
    image_starts: list[int]  # token index of each image's first token
    targets: list[HeadTarget]


def read_records(folder: str | Path, limit: int = 0) -> list[dict]:
    """The export's records (the first ``limit``; 0 = all), checked for the fields training reads."""
    folder = Path(folder)
    path = folder / "episodes.jsonl"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such data folder; make one with `pixelis sim export --suite train --out {folder}`")
    if not path.is_file():
        raise DatasetError(f"{path} is missing; a data folder is what `pixelis sim export` writes")
    records = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for number, line in enumerate(f, 1):
                if limit and len(records) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except (json.JSONDecodeError, RecursionError) as e:
                    raise DatasetError(f"{path}:{number}: not valid JSON ({getattr(e, 'msg', e)})") from None
                if not isinstance(record, dict):
                    raise DatasetError(f"{path}:{number}: a record is a JSON object, got {type(record).__name__}")
                missing = [k for k in RECORD_FIELDS if k not in record]
                if missing:
                    raise DatasetError(f"{path}:{number}: record lacks field(s) {missing}; re-export with this version")
                records.append(record)
        except UnicodeDecodeError as e:
            raise DatasetError(f"{path}: not UTF-8 ({e})") from None
    if not records:
        raise DatasetError(f"{path} has no episodes")
    return records


def _read_image(folder: Path, rel: str, record_id: str) -> np.ndarray:
    path = folder / rel
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
    if img is None:
        raise DatasetError(f"{path} (episode {record_id}) is missing or not an image")
    return np.ascontiguousarray(img[:, :, ::-1])


def episode_messages(record: dict, profile: PromptProfile, no_tools: bool) -> list[dict]:
    """The conversation the model trains on, in internal pixels, as the agent would show it."""
    shown = profile.query_images(len(record["images"]))
    query = [{"type": "image", "image": ref} for ref in shown] + [{"type": "text", "text": record["question"]}]
    if no_tools:
        return [{"role": "user", "content": query},
                {"role": "assistant", "content": [{"type": "text", "text": f"<answer>{record['answer']}</answer>"}]}]
    messages = [dict(m) for m in record["messages"]]
    first_user = next(i for i, m in enumerate(messages) if m.get("role") == "user")
    messages[first_user] = dict(messages[first_user], content=query)
    return profile.messages(messages)


def _expanded(text: str, counts: list[int]) -> str:
    """The text with each image placeholder repeated once per image token, as the processor expands it."""
    parts = text.split(IMAGE_PAD)
    if len(parts) - 1 != len(counts):
        raise DatasetError(f"the chat template wrote {len(parts) - 1} image placeholders for {len(counts)} images")
    return "".join(p + IMAGE_PAD * n for p, n in zip(parts, counts + [0]))


def _weighted_spans(text: str, name_weight: float, argument_weight: float, answer_weight: float) -> list[tuple[int, int, float]]:
    """(start, end, weight) character spans of the targets: each assistant turn, and inside it the
    call's name, its arguments and the answer (later spans override earlier ones)."""
    spans = []
    for turn in _ASSISTANT.finditer(text):
        spans.append((turn.start(1), turn.end(1), 1.0))
        body, base = turn.group(1), turn.start(1)
        for call in _CALL.finditer(body):
            js, js_start = call.group(1), base + call.start(1)
            if (m := _NAME.search(js)) is not None:
                spans.append((js_start + m.start(1), js_start + m.end(1), name_weight))
            if (m := _ARGUMENTS.search(js)) is not None:
                spans.append((js_start + m.start(1), js_start + m.end(1), argument_weight))
        for ans in _ANSWER.finditer(body):
            spans.append((base + ans.start(1), base + ans.end(1), answer_weight))
    return spans


class SFTExamples:
    """Builds ``Example`` s from an export folder for one model's processor and prompt profile."""

    def __init__(self, folder: str | Path, processor, arch: str, profile: PromptProfile, *, no_tools: bool = False,
                 name_weight: float = 1.0, argument_weight: float = 1.0, answer_weight: float = 1.0,
                 max_episodes: int = 0):
        self.folder = Path(folder)
        self.processor, self.arch, self.profile = processor, arch, profile
        self.no_tools = no_tools
        self.weights = (name_weight, argument_weight, answer_weight)
        self.resize = ResizeRule.of(processor.image_processor)
        self.merge = processor.image_processor.merge_size
        self.image_token_id = processor.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        records = read_records(self.folder, max_episodes)
        # Imitate only expert traces that reached the right answer (a failed tool leads the expert astray).
        self.records = [r for r in records if r["expert_correct"]]
        self.skipped_incorrect = len(records) - len(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Example:
        return self.build(self.records[index])

    def build(self, record: dict) -> Example:
        messages = episode_messages(record, self.profile, self.no_tools)
        files = dict(record["image_files"]) | dict(record.get("obs_files") or {})
        refs = image_refs(messages)
        missing = sorted({r for r in refs if r not in files})
        if missing:
            raise DatasetError(f"episode {record['id']}: no file for image(s) {missing} (obs images need an export "
                               "made by this version: re-run `pixelis sim export`)")
        images = {ref: _read_image(self.folder, files[ref], record["id"]) for ref in dict.fromkeys(refs)}
        geoms = geometries(self.arch, images, self.resize)
        model_messages = messages_to_model(messages, geoms, convention(self.arch))
        text = self.processor.apply_chat_template(model_messages, tokenize=False)
        pixels = [images[r] for r in refs]
        enc = self.processor(text=[text], images=pixels or None, return_tensors="pt", return_offsets_mapping=True,
                             input_data_format=CHANNELS_LAST)
        ids = enc["input_ids"][0]
        grid = enc.get("image_grid_thw")
        counts = [int(g.prod()) // self.merge ** 2 for g in grid] if grid is not None else []
        full = _expanded(text, counts)
        offsets = enc["offset_mapping"][0].tolist()
        labels = torch.full_like(ids, -100)
        weights = torch.zeros(len(ids), dtype=torch.float32)
        spans = _weighted_spans(full, *self.weights)
        starts = np.array([s for s, _ in offsets])
        for a, b, w in spans:
            inside = (starts >= a) & (starts < b)
            idx = torch.from_numpy(np.nonzero(inside)[0])
            labels[idx] = ids[idx]
            weights[idx] = w
        labels[ids == self.image_token_id] = -100
        weights[labels == -100] = 0.0
        first = np.cumsum([0] + counts[:-1]).tolist()  # each image's first token among the image tokens
        pad_positions = (ids == self.image_token_id).nonzero()[:, 0].tolist()
        image_starts = [pad_positions[k] for k in first]
        targets = [] if self.no_tools else self._targets(messages, full, offsets, refs, images, image_starts,
                                                             record.get("frame_stamps") or [0.0])
        mm = enc["mm_token_type_ids"][0] if "mm_token_type_ids" in enc else None
        return Example(record["id"], ids, labels, weights, enc.get("pixel_values"), grid, mm, image_starts, targets)

    def _targets(self, messages, full, offsets, refs, images, image_starts, stamps) -> list[HeadTarget]:
        """Heads targets of every call with a box or a point, in internal pixels of its image.
        ``messages`` are the internal-pixel conversation; ``full`` its model-convention text."""
        calls = [json.loads(c.group(1)) for m in messages if m.get("role") == "assistant"
                 for part in m["content"] for c in _CALL.finditer(part.get("text", ""))]
        call_chars = [turn.start(1) + c.start() for turn in _ASSISTANT.finditer(full)
                      for c in re.finditer("<tool_call>", turn.group(1))]
        token_at = {s: i for i, (s, e) in enumerate(offsets) if e > s}
        out = []
        for call, char in zip(calls, call_chars):
            args = call.get("arguments") or {}
            box, point = args.get("bbox_2d"), args.get("point_2d")
            if box is None and point is None:
                continue
            ref = box_image(call.get("name"), args)
            if char not in token_at:
                continue
            shown = [k for k, r in enumerate(refs) if r == ref and image_starts[k] < token_at[char]]
            if not shown:
                continue
            h, w = images[ref].shape[:2]
            nbox = (box[0] / w, box[1] / h, box[2] / w, box[3] / h) if box is not None else None
            npoint = (point[0] / w, point[1] / h) if point is not None else None
            out.append(HeadTarget(token_at[char], shown[-1], nbox, npoint, clip_times(args, stamps)))
        return out


def clip_times(arguments: dict, stamps: list[float]) -> tuple[float, float] | None:
    """A call's ``start``/``end`` given as ``frame:<seconds>s``, as fractions of the clip's span."""
    values = [arguments.get(k) for k in ("start", "end")]
    if not all(isinstance(v, str) and re.fullmatch(r"frame:-?\d+(\.\d+)?s", v) for v in values):
        return None
    t0, span = stamps[0], max(stamps[-1] - stamps[0], 1e-6)
    a, b = (min(max((float(v[6:-1]) - t0) / span, 0.0), 1.0) for v in values)
    return (min(a, b), max(a, b))


def collate(examples: list[Example], pad_id: int, merge: int) -> dict:
    """A padded batch (right padding) with every image of every example, in order, and the heads'
    targets as flat tensors indexed by example."""
    length = max(len(e.input_ids) for e in examples)
    b = len(examples)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    labels = torch.full((b, length), -100, dtype=torch.long)
    weights = torch.zeros((b, length))
    attention = torch.zeros((b, length), dtype=torch.long)
    mm = torch.zeros((b, length), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n], labels[i, :n], weights[i, :n], attention[i, :n] = e.input_ids, e.labels, e.weights, 1
        if e.mm_token_type_ids is not None:
            mm[i, :n] = e.mm_token_type_ids
    batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "weights": weights}
    if any(e.mm_token_type_ids is not None for e in examples):
        batch["mm_token_type_ids"] = mm
    with_images = [e for e in examples if e.pixel_values is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([e.pixel_values for e in with_images])
        batch["image_grid_thw"] = torch.cat([e.image_grid_thw for e in with_images])
    rows = []
    for i, e in enumerate(examples):
        for t in e.targets:
            g = e.image_grid_thw[t.image]
            rows.append((i, t.query, e.image_starts[t.image], int(g[1]) // merge, int(g[2]) // merge, t.box, t.point, t.time))
    batch["targets"] = rows
    return batch
