"""The trajectory vote: which of N unlabelled trajectories of one query the update may imitate.

Each trajectory is canonicalised into what it *did* and *concluded*: its answer (normalised as
the simulator's checker does: lower case, letters, digits and dots), the sequence of operations
it executed, and the regions those operations grounded, in the pixels of the frame they come
from. Two trajectories are in the same group when answer and operations are equal and every
pair of their regions overlaps by at least ``region_iou`` (boxes are bucketed by IoU against the
group's first member, not by exact pixels). A trajectory whose observations cannot be trusted —
an unusable turn, a failed tool call, no answer, cut off by the step or token cap — abstains: it
stays in the electorate N but joins no group.

The update happens only on consensus: the largest group holds at least ``consensus_share`` of N
and at least ``consensus_min`` trajectories, and no other group is as large. Its exemplars are
the group's shortest members, the most confident first (mean log-probability of their tokens).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pixelis_ros.boxes import iou
from pixelis_ros.episode import GROUNDING_LABELS, Episode


def canonical_answer(text: str | None) -> str:
    # The simulator checker's rule (sim.families.base.normalise), restated: importing it would pull
    # MuJoCo into the robot-side worker.
    return re.sub(r"[^a-z0-9.]+", "", (text or "").lower())


@dataclass(frozen=True)
class Signature:
    """What a trajectory did and concluded, for the vote."""

    answer: str
    operations: tuple[str, ...]
    regions: tuple[tuple[str, tuple[float, float, float, float]], ...]
    """(frame reference, box in that frame's pixels) of each grounding result, in order."""


def abstains(episode: Episode) -> str | None:
    """Why a trajectory cannot vote (None: it can)."""
    if episode.error is not None:
        return "error"
    if episode.stop_reason == "max_steps" or any(r.finish_reason == "length" for r in episode.records):
        return "truncated"
    if not canonical_answer(episode.answer):
        return "no answer"
    if any(r.turn.error is not None for r in episode.records):
        return "unusable turn"
    if any(r.result is not None and r.result.error is not None for r in episode.records):
        return "tool error"
    return None


def signature(episode: Episode) -> Signature:
    operations = tuple(r.turn.call.name for r in episode.records if r.turn.call is not None and r.result is not None)
    regions = tuple(episode.to_frame(d) for d in episode.detections if d.label in GROUNDING_LABELS)
    return Signature(canonical_answer(episode.answer), operations, regions)


def same_group(a: Signature, b: Signature, region_iou: float) -> bool:
    if a.answer != b.answer or a.operations != b.operations or len(a.regions) != len(b.regions):
        return False
    return all(ra == rb and iou(ba, bb) >= region_iou for (ra, ba), (rb, bb) in zip(a.regions, b.regions))


@dataclass
class Vote:
    """The outcome over one query's N trajectories."""

    groups: list[list[int]] = field(default_factory=list)
    """Indices of the trajectories in each group, largest first."""
    abstained: dict[int, str] = field(default_factory=dict)
    """Trajectory index -> why it could not vote."""
    electorate: int = 0
    """N, abstentions included."""
    passed: bool = False
    """Consensus: the update may use the winning group."""
    reason: str = ""
    """``consensus``, ``split`` (a tie or too small a share), or ``no votes``."""
    answer: str | None = None
    """The winning group's canonical answer (also reported for a failed vote: the largest group's)."""

    @property
    def winners(self) -> list[int]:
        return self.groups[0] if self.passed else []

    @property
    def share(self) -> float:
        return len(self.groups[0]) / self.electorate if self.groups and self.electorate else 0.0


def vote(episodes: list[Episode], consensus_share: float, consensus_min: int, region_iou: float) -> Vote:
    result = Vote(electorate=len(episodes))
    representatives: list[Signature] = []
    for i, episode in enumerate(episodes):
        why = abstains(episode)
        if why is not None:
            result.abstained[i] = why
            continue
        sig = signature(episode)
        for g, rep in enumerate(representatives):
            if same_group(rep, sig, region_iou):
                result.groups[g].append(i)
                break
        else:
            representatives.append(sig)
            result.groups.append([i])
    order = sorted(range(len(result.groups)), key=lambda g: -len(result.groups[g]))  # stable: first seen wins ties
    result.groups = [result.groups[g] for g in order]
    if not result.groups:
        result.reason = "no votes"
        return result
    result.answer = representatives[order[0]].answer
    top = len(result.groups[0])
    tie = len(result.groups) > 1 and len(result.groups[1]) == top
    result.passed = not tie and top >= consensus_min and top / result.electorate >= consensus_share
    result.reason = "consensus" if result.passed else "split"
    return result


def exemplars(winners: list[int], chain_lengths: list[int], confidences: list[float], count: int) -> list[int]:
    """The winning group's shortest members, the most confident first."""
    return sorted(winners, key=lambda i: (chain_lengths[i], -confidences[i]))[:count]
