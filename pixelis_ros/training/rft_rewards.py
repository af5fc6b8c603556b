"""CC-RFT's rewards: each term a plain function of a finished episode (and its task), so each is
unit-tested on hand-made episodes; ``group_rewards`` weighs and sums them for one group.

- **correctness** (the simulator's label) and **acting** (the action points inside the target);
- **invalid**: turns the agent could not use (unparseable, refused or failing calls);
- **curiosity**: a small forward model, trained online, predicts an embedding of what a call
  returns (a thumbnail of the returned image and a hashed bag of the response's words) from the
  call (operation, box) and a thumbnail of the region it names. Its error on a call, divided by
  the group's mean error, capped, is that call's surprise; a trajectory earns the mean surprise
  of its executed calls. Paid only while the group's tool-call rate is below the gate (as
  Pixel-Reasoner gates its bonus), so it props tool use up and cannot buy tool spam;
- **coherence**: adjacent steps agree — a call acts on what the previous call returned or named
  (after a zoom, its crop), the thought names the operation, no call repeats;
- **efficiency**: a penalty per executed call beyond the first; a tool bonus only when the answer
  is correct.
"""

from __future__ import annotations

import json
import re
import statistics
import zlib
from dataclasses import dataclass

import cv2
import numpy as np

from pixelis_ros.episode import Episode, StepRecord
from pixelis_ros.policy.coords import box_image

OPERATIONS = ("zoom", "segment", "track", "ocr", "temporal")
OPERATION_WORDS = {
    "zoom": ("zoom", "closer", "crop", "enlarge", "magnif"),
    "segment": ("segment", "mask", "locate", "check", "measure", "colour", "outline"),
    "track": ("track", "follow", "moves", "motion"),
    "ocr": ("read", "text", "ocr", "says", "written"),
    "temporal": ("watch", "when", "time", "moment", "lamp", "turns"),
}
"""Words a thought uses for each operation (the expert's own phrasing among them). ``then`` and
``now`` continue the previous step's operation ("Then the red cube.")."""
CONTINUE_WORDS = ("then", "now", "next", "also")
THUMB = 4  # thumbnail side of the curiosity features (4x4x3)
HASH_DIMS = 16


# --- episode facts ------------------------------------------------------------------------------

def executed(record: StepRecord) -> bool:
    """A valid call whose tool ran and returned a result."""
    return record.turn.call is not None and record.turn.error is None and record.result is not None \
        and record.result.error is None


def calls(episode: Episode) -> list[StepRecord]:
    return [r for r in episode.records if executed(r)]


def invalid_turns(episode: Episode) -> int:
    """Turns the agent could not use: parse errors, bad quotes, refused or failing calls."""
    return sum(r.turn.error is not None or (r.result is not None and r.result.error is not None) for r in episode.records)


def truncated(episode: Episode) -> bool:
    """Cut off by the step cap or a turn at max_new_tokens: masked out of the loss, not penalised."""
    return episode.stop_reason == "max_steps" or any(r.finish_reason == "length" for r in episode.records)


# --- plain reward terms -------------------------------------------------------------------------

def correctness(task, episode: Episode) -> float:
    return float(task.is_correct(episode.answer))


def acting(task, episode: Episode) -> float:
    return float(task.hit(episode.action))


def efficiency(episode: Episode) -> float:
    """Executed calls beyond the first (the penalty's count)."""
    return float(max(0, len(calls(episode)) - 1))


def tool_bonus(task, episode: Episode) -> float:
    return float(bool(calls(episode)) and task.is_correct(episode.answer))


def _names_operation(think: str | None, name: str, previous: str | None) -> bool:
    words = re.findall(r"[a-z]+", (think or "").lower())
    if any(w.startswith(v) for w in words for v in OPERATION_WORDS.get(name, ())):
        return True
    return previous == name and any(w in CONTINUE_WORDS for w in words)


def coherence(episode: Episode) -> float:
    """Mean agreement of each executed call with the step before it, in [-1, 1]. A call scores the
    mean of two checks: its thought names the operation, and it acts on what the previous call
    returned or named (after a zoom, on the zoomed crop: that is what a zoom is for; after other
    calls, on one of their returned images or the same image). The first call has only the first
    check; a call repeating an earlier one scores -1."""
    done = calls(episode)
    scores, seen = [], set()
    for k, record in enumerate(done):
        call = record.turn.call
        key = json.dumps([call.name, call.arguments], sort_keys=True, default=str)
        if key in seen:
            scores.append(-1.0)
            continue
        seen.add(key)
        previous = done[k - 1].turn.call if k else None
        named = _names_operation(record.turn.think, call.name, previous.name if previous else None)
        if previous is None:
            scores.append(float(named))
            continue
        image, returned = box_image(call.name, call.arguments), done[k - 1].image_refs
        follows = image in returned or (previous.name != "zoom" and image == box_image(previous.name, previous.arguments))
        scores.append((named + follows) / 2)
    return statistics.fmean(scores) if scores else 0.0


# --- curiosity ------------------------------------------------------------------------------------

def _thumbnail(image: np.ndarray | None, box=None) -> np.ndarray:
    if image is None or image.size == 0:
        return np.zeros(THUMB * THUMB * 3, np.float32)
    img = image
    if box is not None and len(box) == 4:
        h, w = image.shape[:2]
        x1, y1 = int(max(0, min(w - 1, box[0]))), int(max(0, min(h - 1, box[1])))
        x2, y2 = int(max(x1 + 1, min(w, box[2]))), int(max(y1 + 1, min(h, box[3])))
        img = image[y1:y2, x1:x2]
    small = cv2.resize(np.ascontiguousarray(img[..., :3]), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32).reshape(-1) / 255.0


def _hashed_words(data) -> np.ndarray:
    """A bag of the response's words, hashed into HASH_DIMS bins and normalised."""
    out = np.zeros(HASH_DIMS, np.float32)
    for word in re.findall(r"[A-Za-z]+|\d+", json.dumps(data, default=str))[:400]:
        out[zlib.crc32(word.encode()) % HASH_DIMS] += 1.0
    return out / max(1.0, float(np.linalg.norm(out)))


def _episode_images(episode: Episode, frames) -> dict:
    """Every image the episode could name: the frames' ends and the tools' returned images."""
    images = {"frame:-1": frames[-1].image, "frame:0": frames[0].image}
    for record in episode.records:
        if record.result is not None and record.result.error is None:
            images.update(zip(record.image_refs, record.result.images))
    return images


def call_features(episode: Episode, frames) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input, target) of the forward model for each executed call: the operation, its box
    normalised to the image it names and that region's thumbnail -> the returned image's
    thumbnail and the response's hashed words."""
    images = _episode_images(episode, frames)
    out = []
    for record in calls(episode):
        call = record.turn.call
        ref = box_image(call.name, call.arguments)
        image = images.get(ref, images["frame:-1"])
        box = call.arguments.get("bbox_2d")
        box = box if isinstance(box, list) and len(box) == 4 else None
        h, w = image.shape[:2]
        nbox = np.array([box[0] / w, box[1] / h, box[2] / w, box[3] / h] if box else [0, 0, 1, 1], np.float32)
        onehot = np.array([call.name == op for op in OPERATIONS], np.float32)
        x = np.concatenate([onehot, np.clip(nbox, 0, 1), _thumbnail(image, box)])
        returned = record.result.images[0] if record.result.images else None
        y = np.concatenate([_thumbnail(returned), _hashed_words(record.result.data)])
        out.append((x, y))
    return out


class ForwardModel:
    """The curiosity forward model: a two-layer MLP trained online (Adam, one step per group)."""

    IN = len(OPERATIONS) + 4 + THUMB * THUMB * 3
    OUT = THUMB * THUMB * 3 + HASH_DIMS

    def __init__(self, lr: float, seed: int = 0, hidden: int = 64):
        import torch

        g = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(self.IN, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, self.OUT))
        for p in self.net.parameters():  # a seeded init, independent of the policy's RNG
            torch.nn.init.normal_(p, std=0.05, generator=g)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)

    def errors(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        """Prediction error (mean squared) of each pair, then one training step on all of them."""
        import torch

        if not pairs:
            return np.zeros(0, np.float32)
        x = torch.from_numpy(np.stack([p[0] for p in pairs]))
        y = torch.from_numpy(np.stack([p[1] for p in pairs]))
        err = ((self.net(x) - y) ** 2).mean(-1)
        self.optimizer.zero_grad()
        err.mean().backward()
        self.optimizer.step()
        return err.detach().numpy()

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])


def tool_call_rate(episodes: list[Episode]) -> float:
    """Share of episodes that execute at least one call."""
    return statistics.fmean(bool(calls(e)) for e in episodes) if episodes else 0.0


def curiosity(errors_per_episode: list[np.ndarray], rate: float, cap: float, gate: float) -> list[float]:
    """Each trajectory's mean capped surprise (error / the group's mean error) over its executed
    calls; zero for all while the group's tool-call ``rate`` is at or above ``gate``."""
    everything = np.concatenate([e for e in errors_per_episode if len(e)] or [np.zeros(0)])
    if rate >= gate or everything.size == 0:
        return [0.0] * len(errors_per_episode)
    mean = float(everything.mean()) or 1e-12
    return [float(np.minimum(e / mean, cap).mean()) if len(e) else 0.0 for e in errors_per_episode]


# --- the group --------------------------------------------------------------------------------

@dataclass
class GroupRewards:
    total: list[float]
    terms: dict[str, list[float]]  # weighted terms per trajectory (their sum is ``total``)
    correct: list[float]
    tool_call_rate: float


def group_rewards(task, episodes: list[Episode], config, forward_model: ForwardModel | None) -> GroupRewards:
    """Weighted rewards of one group (every episode ran on ``task``); trains the forward model."""
    c = config
    correct = [correctness(task, e) for e in episodes]
    terms = {"correctness": [c.correctness_weight * v for v in correct]}
    if c.acting_weight:
        terms["acting"] = [c.acting_weight * acting(task, e) for e in episodes]
    if c.invalid_penalty:
        terms["invalid"] = [-c.invalid_penalty * invalid_turns(e) for e in episodes]
    rate = tool_call_rate(episodes)
    if c.curiosity_weight and forward_model is not None:
        feats = [call_features(e, task.frames) for e in episodes]
        flat = forward_model.errors([p for f in feats for p in f])
        split, k = [], 0
        for f in feats:
            split.append(flat[k:k + len(f)])
            k += len(f)
        terms["curiosity"] = [c.curiosity_weight * v for v in curiosity(split, rate, c.curiosity_cap, c.curiosity_gate)]
    if c.coherence_weight:
        terms["coherence"] = [c.coherence_weight * coherence(e) for e in episodes]
    if c.efficiency_penalty:
        terms["efficiency"] = [-c.efficiency_penalty * efficiency(e) for e in episodes]
    if c.tool_bonus:
        terms["tool_bonus"] = [c.tool_bonus * tool_bonus(task, e) for e in episodes]
    total = [sum(values[i] for values in terms.values()) for i in range(len(episodes))]
    return GroupRewards(total, terms, correct, rate)
