"""One label-free test-time RL step per query: retrieve, sample, vote, update, judge.

Read top to bottom (``TestTimeRL.process``):

1. Embed the query (``memory.embed``); a query that comes back is the same memory item.
2. TTRL-Guard: an item whose vote winner flipped ``flip_limit`` times is polarised — skipped,
   and its exemplars leave the memory (wrong majorities lock in; arXiv 2605.19444).
3. Sample N complete trajectories with the learning adapter (text at ``temperature``, the
   pointer's cell from its distribution) through the ordinary ``Agent`` and ``Toolbox``.
4. Vote over trajectories (``vote``); a split vote is skipped.
5. Update toward the winners' exemplars plus the retrieved neighbours' (``learner``); the first
   exemplars fill the fixed probe set.
6. Corridor: KL(adapter || EMA) above the bound rejects the update (the adapter is restored);
   else the EMA follows and the drift to the base model is checked (rollback to a snapshot).

``process`` never raises for a bad trajectory: everything it decides is in the returned record.
Serving is elsewhere (``serving``): this object only learns, and ``published`` counts versions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace

from pixelis_ros.ttrl.corridor import Corridor
from pixelis_ros.ttrl.learner import ANCHOR, TRAINED, Learner
from pixelis_ros.ttrl.memory import Memory, embed
from pixelis_ros.ttrl.vote import exemplars, vote


@dataclass
class Snapshot:
    adapter: dict
    ema: dict
    drift: float


@dataclass
class Counters:
    queries: int = 0
    skipped_split: int = 0
    skipped_polarised: int = 0
    version: int = 0
    """Adapter version: bumped whenever the adapter that should be served changes."""
    kl_trace: list = field(default_factory=list)
    """[query number, KL to the EMA, accepted] of every update."""


class TestTimeRL:
    __test__ = False  # not a pytest class

    def __init__(self, policy, config, toolbox=None):
        from pixelis_ros.tools import Toolbox
        from pixelis_ros.training.rft_rollout import SamplingPolicy

        self.config = config
        self.learner = Learner(policy, config)
        self.corridor = Corridor(config)
        self.memory = Memory(config.memory_entries, int(config.memory_mb * 1024 * 1024))
        self.toolbox = toolbox or Toolbox()
        self.sampler = SamplingPolicy(policy, config.temperature, config.pointer_temperature, config.max_new_tokens)
        self.counters = Counters()
        self.snapshots: list[Snapshot] = []

    def process(self, question: str, frames) -> dict:
        """One unlabelled query; returns what happened (``decision``: accepted, rejected,
        rolled_back, split or polarised)."""
        from pixelis_ros.training.rft_rollout import rollout_group

        c, t0 = self.config, time.monotonic()
        self.counters.queries += 1
        vector = embed(question, frames[-1].image)
        item = self.memory.same_item(vector, c.same_item_similarity) if c.flip_limit else None
        item = item or self.memory.add(question, vector)
        record = {"query": self.counters.queries, "item": item.key}
        if c.flip_limit and item.flips >= c.flip_limit:
            return self._skip(record, "polarised", item)
        task = SimpleNamespace(question=question, frames=frames)
        trajectories = rollout_group(self.sampler, task, self.toolbox, c.num_trajectories, c.max_steps_per_episode)
        record["rollout_s"] = round(time.monotonic() - t0, 2)
        return self.learn(trajectories, item, vector, record)

    def learn(self, trajectories, item, vector, record: dict) -> dict:
        """Steps 4-6 on sampled ``trajectories`` of the memory ``item`` (``process`` without the sampling)."""
        c, t0 = self.config, time.monotonic()
        episodes = [t.episode for t in trajectories]
        result = vote(episodes, c.consensus_share, c.consensus_min, c.region_iou)
        item.winners.append(result.answer if result.passed else "")
        record = {**record, "vote": result.reason, "share": round(result.share, 3), "answer": result.answer,
                  "abstained": sorted(result.abstained.values())}
        if c.flip_limit and item.flips >= c.flip_limit:
            return self._skip(record, "polarised", item)
        if not result.passed:
            self.counters.skipped_split += 1
            return {**record, "decision": "split"}
        chains = [sum(r.turn.call is not None for r in e.records) for e in episodes]
        confidence = [sum(t.logprob for t in tr.turns) / max(1, sum(len(t.token_ids) for t in tr.turns))
                      for tr in trajectories]
        chosen = exemplars(result.winners, chains, confidence, c.exemplars)
        turns = [turn for i in chosen for turn in trajectories[i].turns if turn.token_ids]
        self.memory.set_exemplars(item, turns)
        neighbours = self.memory.nearest(vector, c.neighbours, c.min_similarity, exclude=item.key) if c.neighbours else []
        replay = [turn for entry in neighbours for turn in entry.exemplars]
        self.learner.add_probe(turns)
        return {**record, **self._update(turns + replay), "neighbours": len(neighbours),
                "chain": min(chains[i] for i in chosen), "update_s": round(time.monotonic() - t0, 2)}

    def _skip(self, record: dict, decision: str, item) -> dict:
        self.counters.skipped_polarised += 1
        item.exemplars = []
        return {**record, "decision": decision}

    def _update(self, turns) -> dict:
        learner, corridor, counters = self.learner, self.corridor, self.counters
        before = learner.state(TRAINED)
        loss = learner.update(turns, corridor.state.scale)
        kl = learner.kl(ANCHOR)
        accepted = corridor.judge(kl)
        counters.kl_trace.append([counters.queries, round(kl, 6), accepted])
        if not accepted:
            learner.load_state(before, TRAINED)
            return {"decision": "rejected", "kl": kl, **loss}
        learner.ema_step()
        drift = learner.kl(None)
        decision = "accepted"
        if corridor.drifted(drift):
            self._roll_back()
            decision, drift = "rolled_back", learner.kl(None)
        elif corridor.state.accepted % self.config.snapshot_every == 0:
            self.snapshots = (self.snapshots + [Snapshot(learner.state(TRAINED), learner.state(ANCHOR), drift)])[
                -self.config.snapshots:]
        counters.version += 1
        return {"decision": decision, "kl": kl, "drift": drift, "scale": corridor.state.scale, **loss}

    def _roll_back(self) -> None:
        """Back to the newest snapshot within half the drift limit; the base adapter when none is."""
        learner = self.learner
        good = [s for s in self.snapshots if s.drift <= self.config.drift_limit / 2]
        if good:
            learner.load_state(good[-1].adapter, TRAINED)
            learner.load_state(good[-1].ema, ANCHOR)
        else:
            zero = {k: v.zero_() if ".lora_B." in k else v for k, v in learner.state(TRAINED).items()}
            learner.load_state(zero, TRAINED)
            learner.load_state(zero, ANCHOR)
        self.snapshots = good
        self.corridor.rolled_back()

    # --- saved state ------------------------------------------------------------------------------
    def save(self, path, model_id: str):
        """Write everything this object has learned and counted (``state.save_state``, atomic)."""
        from pixelis_ros.ttrl.state import save_state

        tensors: dict = {}

        def put_adapter(prefix: str, state: dict) -> None:
            tensors.update({f"{prefix}/{k}": v.float().cpu().numpy() for k, v in state.items()})

        def put_turn(prefix: str, turn) -> dict:
            for ref, image in turn.images.items():
                tensors[f"{prefix}/{ref}"] = image
            return {"messages": turn.messages, "token_ids": turn.token_ids, "pointer": turn.pointer,
                    "pointer_entropy": turn.pointer_entropy, "logprob": turn.logprob, "images": sorted(turn.images)}

        put_adapter("adapter", self.learner.state(TRAINED))
        put_adapter("ema", self.learner.state(ANCHOR))
        snapshots = []
        for i, s in enumerate(self.snapshots):
            put_adapter(f"snapshot{i}.adapter", s.adapter)
            put_adapter(f"snapshot{i}.ema", s.ema)
            snapshots.append(s.drift)
        entries = []
        for e in self.memory.entries:
            tensors[f"memory{e.key}.vector"] = e.vector
            entries.append({"key": e.key, "question": e.question, "winners": e.winners,
                            "exemplars": [put_turn(f"memory{e.key}.turn{j}", t) for j, t in enumerate(e.exemplars)]})
        document = {"counters": vars(self.counters), "corridor": self.corridor.to_json(), "snapshots": snapshots,
                    "memory": {"next_key": self.memory.next_key, "entries": entries},
                    "probe": [put_turn(f"probe{j}", t) for j, t in enumerate(self.learner.probe)]}
        return save_state(path, tensors, document, model_id)

    def restore(self, path, model_id: str) -> None:
        """Load a saved state (``TTRLStateError`` when it cannot be used; nothing is changed then)."""
        import numpy as np
        import torch

        from pixelis_ros.training.rft_rollout import TurnRecord
        from pixelis_ros.ttrl.corridor import CorridorState
        from pixelis_ros.ttrl.memory import Entry
        from pixelis_ros.ttrl.state import TTRLStateError, load_state

        tensors, doc = load_state(path, model_id)

        def adapter(prefix: str) -> dict:
            return {k[len(prefix) + 1:]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(prefix + "/")}

        def turn(prefix: str, d: dict) -> TurnRecord:
            return TurnRecord(d["messages"], {ref: tensors[f"{prefix}/{ref}"] for ref in d["images"]}, d["token_ids"],
                              tuple(d["pointer"]) if d["pointer"] else None, d["pointer_entropy"], d["logprob"])

        before = (self.learner.state(TRAINED), self.learner.state(ANCHOR))
        try:
            self.learner.load_state(adapter("adapter"), TRAINED)
            self.learner.load_state(adapter("ema"), ANCHOR)
            snapshots = [Snapshot(adapter(f"snapshot{i}.adapter"), adapter(f"snapshot{i}.ema"), drift)
                         for i, drift in enumerate(doc["snapshots"])]
            entries = [Entry(e["key"], e["question"], tensors[f"memory{e['key']}.vector"],
                             [turn(f"memory{e['key']}.turn{j}", t) for j, t in enumerate(e["exemplars"])], e["winners"])
                       for e in doc["memory"]["entries"]]
            probe = [turn(f"probe{j}", t) for j, t in enumerate(doc["probe"])]
            counters, corridor = Counters(**doc["counters"]), CorridorState(**doc["corridor"])
        except (ValueError, KeyError, TypeError) as e:
            self.learner.load_state(before[0], TRAINED)
            self.learner.load_state(before[1], ANCHOR)
            raise TTRLStateError(f"{path}: the state does not fit this model or build ({str(e)[:160]}); delete it to "
                                 "start from the base adapter") from None
        self.snapshots, self.counters, self.corridor.state = snapshots, counters, corridor
        self.memory.entries, self.memory.next_key = entries, doc["memory"]["next_key"]
        self.learner.set_probe(probe)
