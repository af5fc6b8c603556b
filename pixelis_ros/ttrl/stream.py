"""``pixelis ttrl run``: a label-free stream of simulator queries, frozen vs adapting.

Each query of the stream is answered twice, greedily, on the same frames: by the frozen bundled
policy (the adapter disabled) and by the adapting policy *as it was when the query came* — then
the query goes to test-time RL, which sees the question and the frames only. Labels only score:
nothing the learner reads comes from them. Updates run inline, in stream order, so a run is
reproducible; the node runs the same ``TestTimeRL`` on a background worker.

Streams: ``suite`` (the suite's episodes in order) and two adversarial ones that the consensus
gate and the rollbacks must survive — ``distractor`` (every other query is the same scene and
question again, a constant distractor) and ``wrong-majority`` (every other query is one the
frozen policy's sampled majority gets wrong, picked with the labels before the run: the labels
build the attack, the learner still never sees them; when the suite has fewer such queries than
the attack needs, they come back in turn — the same wrong majority again and again).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from pixelis_ros.progress import progress as progress_bar

STREAMS = ("suite", "distractor", "wrong-majority")


def chain_length(episode) -> int:
    return sum(r.turn.call is not None for r in episode.records)


def _tasks(suite_name: str, episodes: int, start: int, stream: str, probe) -> list:
    """The stream's tasks; the adversarial streams interleave their attack with the suite."""
    from pixelis_ros.sim.suites import iter_tasks, load_suite

    suite = load_suite(suite_name)
    if stream == "suite":
        return list(iter_tasks(suite, episodes, start=start))
    honest = list(iter_tasks(suite, (episodes + 1) // 2, start=start))
    if stream == "distractor":
        attack = [honest[0]] * (episodes // 2)
    else:  # wrong-majority: scanned after the honest queries, so the two never share a scene
        attack = []
        for task in iter_tasks(suite, None, start=start + len(honest)):
            if probe(task):
                attack.append(task)
            if len(attack) == episodes // 2:
                break
        if not attack:
            raise ValueError(f"no episode of the suite {suite_name} after the first {len(honest)} has a wrong sampled "
                             "majority: there is nothing to attack with")
        attack = [attack[i % len(attack)] for i in range(episodes // 2)]  # too few: they come back, a harder attack
    mixed = []
    for i in range(len(honest)):
        mixed.append(honest[i])
        if i < len(attack):
            mixed.append(attack[i])
    return mixed[:episodes]


def run_stream(config, model: str | None, suite: str, episodes: int, start: int = 0, stream: str = "suite",
               out: str | Path | None = None, progress: bool = True) -> dict:
    import torch

    from pixelis_ros.agent import Agent, AgentLimits
    from pixelis_ros.policy.bundled import bundled_model
    from pixelis_ros.policy.hf import load_hf_policy
    from pixelis_ros.tools import Toolbox
    from pixelis_ros.ttrl.online import TestTimeRL
    from pixelis_ros.ttrl.vote import vote

    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {', '.join(STREAMS)}, got {stream!r}")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    policy = load_hf_policy(Path(model) if model else bundled_model(), heads="auto", max_new_tokens=config.max_new_tokens)
    toolbox = Toolbox()
    ttrl = TestTimeRL(policy, config, toolbox)
    agent = Agent(policy, toolbox, AgentLimits(max_steps=config.max_steps_per_episode))

    def frozen(task):
        policy.set_adapter(None)
        try:
            return agent.run(task.question, task.frames)
        finally:
            policy.set_adapter("ttrl")

    def majority_wrong(task) -> bool:  # the wrong-majority attack: the frozen policy's own vote is wrong
        from pixelis_ros.training.rft_rollout import rollout_group

        policy.set_adapter(None)
        try:
            episodes_ = [t.episode for t in rollout_group(ttrl.sampler, task, toolbox, config.num_trajectories,
                                                          config.max_steps_per_episode)]
        finally:
            policy.set_adapter("ttrl")
        result = vote(episodes_, config.consensus_share, config.consensus_min, config.region_iou)
        return result.passed and not task.is_correct(result.answer)

    tasks = _tasks(suite, episodes, start, stream, majority_wrong)
    rows, t0 = [], time.monotonic()
    bar = progress_bar(tasks, desc=f"ttrl {stream}", enabled=None if progress else False)
    for i, task in enumerate(bar):
        base = frozen(task)
        adapted = agent.run(task.question, task.frames)  # the policy as it is when the query comes
        outcome = ttrl.process(task.question, task.frames)
        rows.append({"index": i, "family": task.family, "attack": stream != "suite" and i % 2 == 1,
                     "frozen": task.is_correct(base.answer), "adapted": task.is_correct(adapted.answer),
                     "frozen_chain": chain_length(base), "adapted_chain": chain_length(adapted), **outcome})
        bar.set_postfix(frozen=f"{statistics.fmean(r['frozen'] for r in rows):.2f}",
                        adapted=f"{statistics.fmean(r['adapted'] for r in rows):.2f}",
                        acc=ttrl.corridor.state.accepted, rej=ttrl.corridor.state.rejected)
    bar.close()
    result = summary(rows, ttrl, config, stream)
    result["seconds"] = round(time.monotonic() - t0, 1)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "stream.jsonl").write_text("".join(json.dumps(r, default=float) + "\n" for r in rows))
        plot_stream(rows, ttrl.counters.kl_trace, config, out / "ttrl.png", stream)
        result["plot"] = str(out / "ttrl.png")
        (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def summary(rows: list[dict], ttrl, config, stream: str) -> dict:
    """The command's JSON contract, plus what a reader needs to judge it."""
    frozen = statistics.fmean(r["frozen"] for r in rows)
    adapted = statistics.fmean(r["adapted"] for r in rows)
    kls = [kl for _, kl, _ in ttrl.counters.kl_trace]
    accepted_kls = [kl for _, kl, ok in ttrl.counters.kl_trace if ok]
    state = ttrl.corridor.state
    honest = [r for r in rows if not r["attack"]]
    out = {"frozen_accuracy": round(frozen, 4), "adapted_accuracy": round(adapted, 4),
           "relative_gain": round((adapted - frozen) / frozen, 4) if frozen else None,
           "kl": {"min": round(min(kls), 6) if kls else None, "max": round(max(kls), 6) if kls else None,
                  "mean": round(statistics.fmean(kls), 6) if kls else None,
                  "in_corridor_share": round(sum(k <= config.kl_high for k in kls) / len(kls), 4) if kls else None},
           "updates_accepted": state.accepted, "updates_rejected": state.rejected, "rollbacks": state.rollbacks,
           "mean_chain_length": {"frozen": round(statistics.fmean(r["frozen_chain"] for r in rows), 3),
                                 "adapted": round(statistics.fmean(r["adapted_chain"] for r in rows), 3)},
           "episodes": len(rows), "stream": stream,
           "accepted_in_corridor_share": round(sum(k <= config.kl_high for k in accepted_kls) / len(accepted_kls), 4)
           if accepted_kls else None,
           "won_lost": [sum(r["adapted"] and not r["frozen"] for r in rows), sum(r["frozen"] and not r["adapted"] for r in rows)],
           "skipped": {"split": ttrl.counters.skipped_split, "polarised": ttrl.counters.skipped_polarised},
           "kl_high": config.kl_high, "kl_low": config.kl_low}
    if stream != "suite":
        f = statistics.fmean(r["frozen"] for r in honest)
        a = statistics.fmean(r["adapted"] for r in honest)
        out["honest_queries"] = {"episodes": len(honest), "frozen_accuracy": round(f, 4), "adapted_accuracy": round(a, 4),
                                 "share_of_frozen": round(a / f, 4) if f else None}
    return out


def plot_stream(rows: list[dict], kl_trace: list, config, path: Path, stream: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    xs = [r["index"] + 1 for r in rows]
    for key, colour in (("frozen", "tab:gray"), ("adapted", "tab:blue")):
        running, total = [], 0
        for n, r in enumerate(rows, 1):
            total += r[key]
            running.append(total / n)
        top.plot(xs, running, label=f"{key} (running accuracy)", color=colour)
    top.set_ylabel("accuracy")
    top.legend(fontsize=8)
    top.set_title(f"test-time RL on a label-free stream ({stream})")
    if kl_trace:
        q = [k[0] for k in kl_trace]
        bottom.scatter(q, [k[1] for k in kl_trace], c=["tab:green" if k[2] else "tab:red" for k in kl_trace], s=14,
                       label="KL(policy || EMA) per update (red: rejected)")
    bottom.axhspan(0, config.kl_high, color="tab:green", alpha=0.08, label="corridor")
    bottom.axhline(config.kl_high, color="tab:red", lw=1)
    bottom.axhline(config.kl_low, color="tab:green", lw=1, ls="--")
    bottom.set_ylabel("nats / position")
    bottom.set_xlabel("query")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
