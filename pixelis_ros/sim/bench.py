"""``pixelis sim bench``: the paper's table at our scale — per task family, how often a policy
answers right, hits the acting target, and how it uses the tools.

Policies: ``oracle`` replays each task's expert trace (the real tools run again on the same
pixels), so its accuracy is the ceiling the tools allow; ``noTool`` answers every question with
the most frequent answer for its question type, learned on a disjoint set of seeds, without
looking — the floor. A model folder is served by a policy backend (``torch``, ``onnx``; read from
the folder by default). Scores say how often; ``failures`` says which episodes (question, truth,
answer, error), in the shape ``pixelis sim loop`` reports them, so a regression can be read.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Callable, Iterable

from pixelis_ros.agent import Agent
from pixelis_ros.episode import Episode
from pixelis_ros.policy.scripted import ScriptedPolicy
from pixelis_ros.progress import progress as progress_bar
from pixelis_ros.sim.failures import failures
from pixelis_ros.sim.families import Task
from pixelis_ros.tools import Toolbox
from pixelis_ros.tools.arguments import ArgumentError
from pixelis_ros.tools.base import ToolError

PolicyFactory = Callable[[Task], object]


def oracle(task: Task) -> ScriptedPolicy:
    return ScriptedPolicy(task.trace)


def answer_prior(tasks: Iterable[Task]) -> dict[str, str]:
    """The most frequent answer per question type."""
    by_type: dict[str, Counter] = defaultdict(Counter)
    for task in tasks:
        by_type[task.question_type][task.answer] += 1
    return {qtype: counts.most_common(1)[0][0] for qtype, counts in by_type.items()}


def no_tool(prior: dict[str, str]) -> PolicyFactory:
    return lambda task: ScriptedPolicy(f"<think>Answer from priors, without tools.</think>\n<answer>{prior.get(task.question_type, '')}</answer>")


def _call_stats(episode: Episode, toolbox: Toolbox) -> tuple[int, int, int]:
    """(call turns, valid calls, valid calls whose tool failed)."""
    calls = valid = failed = 0
    for record in episode.records:
        if record.turn.answer is not None and record.turn.error is None:
            continue
        calls += 1
        if record.turn.call is None:
            continue
        try:
            toolbox.validate(record.turn.call.name, record.turn.call.arguments)
        except (ArgumentError, ToolError):
            continue
        valid += 1
        failed += record.result is not None and record.result.error is not None
    return calls, valid, failed


def run_bench(tasks: Iterable[Task], policy: PolicyFactory, toolbox: Toolbox | None = None,
              on_episode: Callable[[Task, Episode], None] | None = None, start: int = 0,
              total: int | None = None) -> dict:
    """Per-family scores of ``policy`` on ``tasks`` and the episodes it failed (``failures``, as
    ``pixelis sim loop`` reports them; ``start``: the schedule index of the first task; ``total``:
    how many tasks there are, for the progress bar);
    ``on_episode(task, episode)`` sees each episode."""
    toolbox = toolbox or Toolbox()
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    results = []
    for index, task in enumerate(progress_bar(tasks, total=total, desc="bench", unit="episode"), start):
        episode = Agent(policy(task), toolbox).run(task.question, task.frames)
        if on_episode is not None:
            on_episode(task, episode)
        calls, valid, failed = _call_stats(episode, toolbox)
        correct, hit = task.is_correct(episode.answer), task.hit(episode.action)
        results.append({"index": index, "family": task.family, "question": task.question, "truth": task.answer,
                        "answer": episode.answer, "correct": correct, "hit": hit, "error": episode.error})
        row = rows[task.family]
        row["correct"].append(correct)
        row["hit"].append(hit)
        row["chain"].append(sum(r.turn.call is not None for r in episode.records))
        row["calls"].append(calls)
        row["valid"].append(valid)
        row["failed"].append(failed)
        row["ms"].append(episode.total_ms)
    families = {}
    for name in sorted(rows):
        r = rows[name]
        calls, valid = sum(r["calls"]), sum(r["valid"])
        families[name] = {
            "accuracy": round(statistics.fmean(r["correct"]), 4),
            "acting_success": round(statistics.fmean(r["hit"]), 4),
            "mean_chain_length": round(statistics.fmean(r["chain"]), 3),
            "valid_call_rate": round(valid / calls, 4) if calls else None,  # None: the policy made no call
            "tool_error_rate": round(sum(r["failed"]) / valid, 4) if valid else None,
            "latency_ms": {"p50": round(statistics.median(r["ms"]), 1), "max": round(max(r["ms"]), 1)},
            "episodes": len(r["correct"]),
        }
    mean = round(statistics.fmean(f["accuracy"] for f in families.values()), 4) if families else 0.0
    return {"families": families, "mean_accuracy": mean, "failures": failures(results)}


def markdown(result: dict, policy: str) -> str:
    lines = [f"| family ({policy}) | accuracy | acting | chain | valid calls | tool errors | p50 ms | episodes |",
             "|---|---|---|---|---|---|---|---|"]
    def rate(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    for name, f in result["families"].items():
        lines.append(f"| {name} | {f['accuracy']:.2f} | {f['acting_success']:.2f} | {f['mean_chain_length']:.2f} | "
                     f"{rate(f['valid_call_rate'])} | {rate(f['tool_error_rate'])} | {f['latency_ms']['p50']:.0f} | {f['episodes']} |")
    lines.append(f"| **mean** | **{result['mean_accuracy']:.2f}** | | | | | | |")
    return "\n".join(lines)
