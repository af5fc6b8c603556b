"""Fuzz target ``agent``: malformed model output, scripts and queries through the node's episode path.

Each case is a short chain of valid CoTA turns (zoom, OCR, segment, track, temporal, answer) with
one to three mutations of the kinds that broke the node in issue #13: huge integers and numbers
past float range, lone surrogates (escaped and raw), huge strings, deep nesting, unclosed or
repeated tags, empty answers, random text. It runs the way the node runs it: through
``AgentNodeCore.run_query`` (``Agent.run`` with the real tools, then every output published and
CDR-encoded — the answer JSON, detections, target, annotated image, diagnostics), as

- ``model``: the turns replayed one per generation, exactly as written (what a model emits);
- ``script``: the turns joined into one script replayed by ``ScriptedPolicy`` (the
  ``accept_scripts`` path, so the script splitter is fuzzed too);
- ``query``: a mutated ``{"query", "script"}`` JSON handed to ``on_query``.

An episode stopped with ``internal_error``, a tool error that is a library exception passed on
raw (the Toolbox's ``<tool> failed: <Type>: ...``) or an exception out of the node is internal;
every error the user sees (the answer's, each step's, the diagnostics') is length-checked.
"""

from __future__ import annotations

import json
import random
import re

import cv2
import numpy as np

from pixelis_ros import messages as M
from pixelis_ros.agent import Agent, AgentLimits
from pixelis_ros.fuzz import mutate
from pixelis_ros.fuzz.target import Case, Escaped, Target, short
from pixelis_ros.node.agent_core import AgentNodeCore
from pixelis_ros.node.config import AgentNodeConfig
from pixelis_ros.policy.base import Generation, PolicyError
from pixelis_ros.tools import Toolbox, ToolboxConfig

SIZES = {"small": (160, 120), "tiny": (40, 30)}  # the tiny frame: renderers and crops at their limits
QUERY = "What does the sign say?"
# The Toolbox's last line of defence words an unexpected exception so: a library's error reached
# the model raw instead of a message in our words (issue #13), an internal error like any other.
RAW_TOOL_ERROR = re.compile(r"^\w+ failed: ([A-Za-z_][\w.]*): ")
BIG = (1_000, 100_000, 1_000_000)


def _scene(w: int, h: int, t: int) -> np.ndarray:
    """A frame with a sign and a square that moves right over time."""
    img = np.full((h, w, 3), (70, 90, 110), np.uint8)
    cv2.rectangle(img, (w // 8, h // 6), (w // 2, h // 2), (235, 235, 235), -1)
    cv2.putText(img, "GATE 7", (w // 8 + 2, h // 3 + 4), cv2.FONT_HERSHEY_SIMPLEX, max(0.2, w / 500), (20, 20, 20), 1)
    x = w // 8 + t * w // 16
    cv2.rectangle(img, (x, 2 * h // 3), (x + w // 8, 2 * h // 3 + h // 6), (200, 30, 30), -1)
    return img


class ReplayPolicy:
    """Replays fixed generations one per turn, exactly as given (a model's raw output)."""

    name = "replay"

    def __init__(self, turns: list[str]):
        self.turns, self.position = turns, 0

    def reset(self) -> None:
        self.position = 0

    def generate(self, messages, images) -> Generation:
        if self.position >= len(self.turns):
            raise PolicyError(f"the replayed output has no turn {self.position + 1}")
        self.position += 1
        return Generation(text=self.turns[self.position - 1])


def _calls(w: int, h: int) -> list[dict]:
    return [
        {"name": "zoom", "arguments": {"bbox_2d": [w // 10, h // 10, w // 2, h // 2], "image": "frame:-1"}},
        {"name": "ocr", "arguments": {"image": "obs:0"}},
        {"name": "ocr", "arguments": {"image": "frame:-1", "bbox_2d": [w // 10, h // 8, w // 2, h // 2]}},
        {"name": "segment", "arguments": {"bbox_2d": [w // 8, 2 * h // 3 - 4, w // 3, h - 4]}},
        {"name": "segment", "arguments": {"point_2d": [w // 4, h // 3]}},
        {"name": "track", "arguments": {"bbox_2d": [w // 8, 2 * h // 3, w // 4, 5 * h // 6], "start": "frame:0", "end": "frame:-1"}},
        {"name": "temporal", "arguments": {"predicate": "change"}},
        {"name": "temporal", "arguments": {"predicate": "colour", "value": "red", "bbox_2d": [0, h // 2, w, h]}},
    ]


ANSWERS = ["<answer>GATE 7</answer>", "<answer>{text}</answer>", "<answer>{lines.0.text}</answer>", "<answer>red</answer>"]


def _turn(call: dict, think: str | None) -> str:
    return (f"<think>{think}</think>\n" if think is not None else "") + f"<tool_call>\n{json.dumps(call)}\n</tool_call>"


# --- mutations of one call (on its JSON, with raw tokens JSON cannot carry) ----------------------
def _raw(rng: random.Random) -> str:
    """A JSON value as raw text: a number out of range, an escape, a huge or deep value."""
    kind = rng.choice(("huge_int", "bad_number", "odd_string", "huge_string", "deep"))
    if kind == "huge_int":
        return rng.choice(mutate.HUGE_INTS)
    if kind == "bad_number":
        return rng.choice(mutate.BAD_NUMBERS)
    if kind == "odd_string":
        return '"' + rng.choice(mutate.ODD_STRINGS) * rng.choice((1, 3)) + '"'
    if kind == "huge_string":
        return '"' + "A" * rng.choice(BIG) + '"'
    depth = rng.choice((20, 500, 990, 1001, 5000, 100_000))
    return "[" * depth + "1" + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth


def _mutate_call(rng: random.Random, call: dict, w: int, h: int) -> tuple[str, str]:
    """(kind, turn text) for one mutation of a call's structure or values."""
    call = json.loads(json.dumps(call))
    args = call["arguments"]
    kind = rng.choice(("value", "box_value", "box_geometry", "box_type", "ref", "name", "keys", "extra_arg"))
    token = None
    if kind == "value":  # any argument (or a new one) replaced by a raw value
        key = rng.choice(sorted(args) + ["bbox_2d"])
        args[key], token = "__RAW__", _raw(rng)
    elif kind == "box_value":
        box = list(args.get("bbox_2d") or args.get("point_2d") or [1, 2, 3, 4])
        box[rng.randrange(len(box))] = "__RAW__"
        args["bbox_2d" if "bbox_2d" in args or "point_2d" not in args else "point_2d"] = box
        token = rng.choice(mutate.HUGE_INTS + mutate.BAD_NUMBERS)
    elif kind == "box_geometry":  # shapes tools and the renderer choke on
        args.pop("point_2d", None)
        args["bbox_2d"] = rng.choice([[0, 0, w, h], [-5, -5, w + 5, h + 5], [w // 2, h // 2, w // 2 + 5, h // 2 + 40],
                                      [w - 8, 4, w, 40], [w - 45, 2, w - 1, h // 3], [3, 3, 4, 4], [50, 50, 10, 10],
                                      [0, 0, 1, 1], [w - 1, h - 1, w, h], [0.4, 0.4, 0.6, 0.6], [0, 0, w * 1000, h]])
    elif kind == "box_type":
        args["bbox_2d"] = rng.choice(["0,0,10,10", {"x": 1}, [], [1, 2, 3], [1, 2, 3, 4, 5], [[1, 2], [3, 4]],
                                      [None, 1, 2, 3], [True, False, True, True], ["1", "2", "30", "40"]])
    elif kind == "ref":
        key = rng.choice([k for k in ("image", "start", "end") if k in args] or ["image"])
        args[key] = rng.choice(["frame:" + "9" * rng.choice((20, 4301, 20000)), "frame:-" + "9" * 5000, "frame:1e309s",
                                "frame:nans", "frame:-infs", "obs:-1", "obs:" + "9" * 5000, "frame:", "obs:0.5",
                                "frame:\ud800", "x" * rng.choice(BIG), "frame:-1" + "\u200b", 7, None])
    elif kind == "name":
        call["name"] = rng.choice(["", "zoom\u200b", "ZOOM", "x" * rng.choice(BIG), "\ud800", "__import__", None, 1, ["zoom"]])
    elif kind == "keys":
        body = json.dumps(call)
        return kind, "<tool_call>\n" + rng.choice([
            body.replace('"name"', '"name": "zoom", "name"', 1), body[:-1] + ', "extra": 1}',
            json.dumps({"arguments": args}), json.dumps({"name": call["name"]}), json.dumps([call]),
            json.dumps({"name": call["name"], "arguments": [1, 2]}), "null", '"zoom"', "1e309"]) + "\n</tool_call>"
    else:
        args[rng.choice(["x" * rng.choice(BIG), "", "\ud800", "bbox_2D", "__class__"])] = 1
    body = json.dumps(call)
    if token is not None:
        body = body.replace('"__RAW__"', token, 1)
    return kind, f"<tool_call>\n{body}\n</tool_call>"


# --- mutations of a turn's text -------------------------------------------------------------------
def _mutate_text(rng: random.Random, turn: str) -> tuple[str, str]:
    kind = rng.choice(("unclosed", "unopened", "swapped", "nested", "raw_chars", "repeat_tags", "huge_think",
                       "empty_answer", "bad_quote", "random_text", "random_bytes", "cut", "no_tags"))
    if kind == "unclosed":
        return kind, turn.replace("</tool_call>", "").replace("</answer>", "").replace("</think>", "", rng.randint(0, 1))
    if kind == "unopened":
        return kind, turn.replace("<tool_call>", "").replace("<answer>", "")
    if kind == "swapped":
        return kind, turn.replace("<tool_call>", "<answer>", 1)
    if kind == "nested":
        return kind, rng.choice(["<think><think>x</think></think>", "<tool_call><tool_call>", "<answer><think>"]) + turn
    if kind == "raw_chars":
        chars = list(turn)
        for _ in range(rng.randint(1, 5)):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(mutate.RAW_ODD))
        return kind, "".join(chars)
    if kind == "repeat_tags":  # quadratic-regex food
        tag = rng.choice(["<think>", "<tool_call>", "<answer>", "<tool_response>", "</tool_call>", "<think>x</think>",
                          "<tool_call>{", "<"])
        return kind, tag * rng.choice((100, 5_000, 50_000, 200_000)) + turn
    if kind == "huge_think":
        return kind, f"<think>{'t' * rng.choice(BIG)}</think>\n" + turn
    if kind == "empty_answer":
        return kind, rng.choice(["<answer></answer>", "<answer>   </answer>", "<answer>\u200b</answer>", "<answer>\n</answer>",
                                 "<answer>\ud800</answer>", "<answer>\ufeff\u200b\u200c</answer>", "<answer>"])
    if kind == "bad_quote":
        return kind, rng.choice(["<answer>{}</answer>", "<answer>{" + "a." * 5000 + "a}</answer>",
                                 "<answer>{lines." + "9" * 4400 + ".text}</answer>", "<answer>{" + "x" * 100_000 + "}</answer>",
                                 "<answer>{lines.-1.text}</answer>", "<answer>{text.0}</answer>", "<answer>{images}</answer>"])
    if kind == "random_text":
        return kind, mutate.random_text(rng, rng.choice((1, 50, 2000, 50_000)))
    if kind == "random_bytes":
        return kind, mutate.decoded_bytes(rng, rng.choice((1, 100, 5000, 100_000)))
    if kind == "cut":
        return kind, turn[: rng.randrange(len(turn) + 1)]
    return kind, turn.replace("<tool_call>", "").replace("</tool_call>", "").replace("<answer>", "").replace("</answer>", "")


def _query(rng: random.Random) -> tuple[str, object]:
    if rng.random() < 0.85:
        return "", QUERY
    return "query", rng.choice(["", "   ", "\u200b", "\u200b\u200c\ufeff", "q" * 2000, "q" * 2001, "q" * 1_000_000,
                                "\ud800?", "\x00", "what?\r\n\x1b[2J", None, 12, "é" * 1999])


def _scripted_query(rng: random.Random, query, script: str) -> tuple[str, str]:
    kind = rng.choice(("valid", "deep", "not_object", "types", "huge", "invalid", "escapes", "dup"))
    if kind == "valid":
        return kind, json.dumps({"query": query, "script": script}, ensure_ascii=rng.random() < 0.5)
    if kind == "deep":
        d = rng.choice((1000, 100_000))
        return kind, rng.choice(["[" * d + "]" * d, '{"query":' * d + "1" + "}" * d, "[" * d])
    if kind == "not_object":
        return kind, rng.choice(["[1, 2]", "null", "1e309", "9" * 5000, '"text"', "true"])
    if kind == "types":
        return kind, json.dumps(rng.choice([{"query": 1, "script": script}, {"query": query, "script": None},
                                            {"query": query, "script": [script]}, {"script": script}, {}]))
    if kind == "huge":
        return kind, json.dumps({"query": query, "script": script + "<think>" + "x" * rng.choice(BIG) + "</think>"})
    if kind == "invalid":
        return kind, json.dumps({"query": query, "script": script})[: rng.randint(1, 40)]
    if kind == "escapes":
        return kind, '{"query": "\\ud800", "script": "<answer>\\udfff\\u0000</answer>"}'
    return kind, '{"query": "a", "query": "b", "script": "<answer>x</answer>", "script": "<answer>y</answer>"}'


class AgentTarget(Target):
    name = "agent"
    domain_errors = ()  # the node path raises nothing: every problem is an answer with an error

    def setup(self, workdir) -> None:
        self.toolbox = Toolbox(ToolboxConfig(tool_time_budget_s=5.0))
        self.limits = AgentLimits()
        self.published: list[tuple[str, object]] = []
        self.cores = {}
        config = AgentNodeConfig(accept_scripts=True, max_frame_age_s=0.0)
        for size, (w, h) in SIZES.items():
            core = AgentNodeCore(config, self._publish)
            for t in range(4):
                core.on_image(M.image_msg(_scene(w, h, t), 100.0 + t * 0.1))
            core.agent = Agent(None, self.toolbox, self.limits)  # what activate() builds, without its worker thread
            self.cores[size] = core
        # Warm up every tool once (OCR loads its models on first use) so cases are timed on their own.
        w, h = SIZES["small"]
        warm = "\n".join(_turn(c, None) for c in _calls(w, h)) + "\n" + ANSWERS[0]
        self.cores["small"].run_query(QUERY, script=warm)

    def _publish(self, name: str, msg) -> None:
        M.serialize(msg)  # what the transport does next: an unencodable message is the node's crash
        self.published.append((name, msg))

    def make(self, rng: random.Random) -> Case:
        frames = "tiny" if rng.random() < 0.03 else "small"
        w, h = SIZES[frames]
        calls = _calls(w, h)
        chain = [rng.choice(calls) for _ in range(rng.choice((1, 1, 2, 3)))]
        thinks = [rng.choice([None, "Look closer.", "I should read it."]) for _ in chain]
        turns = [_turn(c, t) for c, t in zip(chain, thinks)] + [rng.choice(ANSWERS)]
        kinds = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            i = rng.randrange(len(turns))
            if i < len(chain) and rng.random() < 0.6:
                kind, text = _mutate_call(rng, chain[i], w, h)
                turns[i] = (f"<think>{thinks[i]}</think>\n" if thinks[i] else "") + text
            else:
                kind, turns[i] = _mutate_text(rng, turns[i])
            kinds.append(kind)
        qkind, query = _query(rng)
        if qkind:
            kinds.append(qkind)
        mode = rng.choices(("model", "script", "query"), (0.6, 0.3, 0.1))[0]
        data = {"mode": mode, "frames": frames, "turns": turns, "query": query}
        if mode == "script":
            data["script"] = "\n".join(turns)
        elif mode == "query":
            skind, data["text"] = _scripted_query(rng, query, "\n".join(turns))
            kinds.append(skind)
        kind = f"{mode}:" + "+".join(sorted(set(kinds)))
        shown = data.get("text") or data.get("script") or turns
        return Case(kind=kind, summary=f"{frames} {short(shown)}", data=data)

    def run(self, case: Case) -> list[str]:
        d = case.data
        core = self.cores[d["frames"]]
        core.counters.last_error = ""  # diagnostics repeat the latest error: start each case clean
        self.published = []
        if d["mode"] == "model":
            core.agent = Agent(ReplayPolicy(d["turns"]), self.toolbox, self.limits)
            episodes = [core.run_query(d["query"])]
        elif d["mode"] == "script":
            core.agent = Agent(None, self.toolbox, self.limits)
            episodes = [core.run_query(d["query"], script=d["script"])]
        else:
            core.agent = Agent(None, self.toolbox, self.limits)
            core.on_query(d["text"])
            episodes = []
            while not core._queries.empty():  # the worker thread's job, run here so it is timed and attributed
                episodes.append(core._run(*core._queries.get_nowait()))
        for episode in episodes:
            if episode is not None and episode.stop_reason == "internal_error":
                raise Escaped(f"episode stopped with internal_error: {short(episode.error, 300)}")
        messages = self._messages()
        raw = [m for m in messages if RAW_TOOL_ERROR.match(m)]
        if raw:
            raise Escaped(f"a tool's exception reached the model raw: {short(raw[0], 240)}")
        return messages

    def _messages(self) -> list[str]:
        out = []
        for name, msg in self.published:
            if name == "answer":
                record = json.loads(msg.data)
                out.append(record.get("error") or "")
                for step in (record.get("trace") or {}).get("steps", []):
                    out.append(step.get("error") or "")
                    response = step.get("response")
                    if isinstance(response, dict):
                        out.append(str(response.get("error") or ""))
            elif name == "diagnostics":
                out += [s.message for s in msg.status if s.message != "ok"]
        return out
