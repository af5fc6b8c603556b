"""``pixelis train table``: the SFT results table — every row scored on the same held-out test
episodes, generated once and shared, with relative gains computed as the paper does,
``(ours - baseline) / baseline``.

Rows come from ``training/table.yaml``: the no-tool answer prior, the same architecture trained
without tools (the paper's baseline), the oracle (the ceiling the tools allow), the SFT model and
its ablation. Beside the relative gain each row counts, on the same episodes, those it gets right
and the baseline wrong and the reverse (a paired view: on 120 episodes one episode is 0.8 points).
For model rows the table also says *which step fails*, per family, by comparing each
episode with the expert's own trace on the same pixels:

- ``tool_choice``: the episode's sequence of operations equals the expert's;
- ``grounding``: the first call's executed box has its centre inside the expert's first box
  (same image), i.e. the policy pointed at the right object;
- ``reading``: the answer is right among episodes whose grounding was right (reading the
  observation, copying or comparing what the tools said).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from pixelis_ros.training.config import ConfigError

DEFAULT_ROWS = Path(__file__).resolve().parents[2] / "training" / "table.yaml"


def _rows(path: str | Path) -> tuple[list[dict], str]:
    path = Path(path)
    if not path.is_file() and str(path) == "training/table.yaml":
        path = DEFAULT_ROWS
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the table's rows ({e})") from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and {"name", "policy"} <= set(r) for r in rows):
        raise ConfigError(f"{path}: 'rows' must be a list of {{name, policy}} mappings")
    baseline = data.get("baseline", rows[0]["name"])
    if baseline not in [r["name"] for r in rows]:
        raise ConfigError(f"{path}: baseline {baseline!r} is not one of the rows")
    return rows, baseline


def _centre_in(box, target) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return target[0] <= cx <= target[2] and target[1] <= cy <= target[3]


def _first_box(episode):
    from pixelis_ros.policy.coords import box_image

    for r in episode.records:
        if r.turn.call is not None and isinstance(r.turn.call.arguments.get("bbox_2d"), list):
            return box_image(r.turn.call.name, r.turn.call.arguments), r.turn.call.arguments["bbox_2d"]
    return None


def diagnose(task, episode) -> dict:
    """Which step of ``episode`` went wrong, judged against the expert's trace of ``task``."""
    ops = [r.turn.call.name for r in episode.records if r.turn.call is not None]
    expert_ops = [r.turn.call.name for r in task.expert.records if r.turn.call is not None]
    mine, theirs = _first_box(episode), _first_box(task.expert)
    grounded = None
    if theirs is not None:
        grounded = mine is not None and mine[0] == theirs[0] and len(mine[1]) == 4 and _centre_in(mine[1], theirs[1])
    return {"tool_choice": ops == expert_ops, "grounding": grounded, "correct": task.is_correct(episode.answer)}


def _diagnosis_summary(per_family: dict[str, list[dict]]) -> dict:
    out = {}
    for family, rows in sorted(per_family.items()):
        grounded = [r for r in rows if r["grounding"]]
        judged = [r for r in rows if r["grounding"] is not None]
        out[family] = {"tool_choice": round(statistics.fmean(r["tool_choice"] for r in rows), 3),
                       "grounding": round(len(grounded) / len(judged), 3) if judged else None,
                       "reading": round(statistics.fmean(r["correct"] for r in grounded), 3) if grounded else None}
    return out


def _policy_factory(spec: str, backend: str, prior_tasks):
    from pixelis_ros.sim.bench import answer_prior, no_tool, oracle

    if spec == "oracle":
        return oracle, None
    if spec == "noTool":
        return no_tool(answer_prior(prior_tasks())), None
    from pixelis_ros.policy import PolicyError
    from pixelis_ros.policy.registry import load_policy

    if not Path(spec).is_dir():
        raise ConfigError(f"table row policy {spec!r}: not oracle, noTool or a model folder (train it first: see "
                          "training/README.md)")
    try:
        model = load_policy(backend, spec)
    except PolicyError as e:
        raise ConfigError(f"table row policy {spec}: {e}") from None
    return (lambda task: model), model


def sft_table(config: str | Path = "training/table.yaml", episodes: int = 120, backend: str = "torch",
              out: str | Path | None = None, suite_name: str = "test") -> dict:
    import json

    from pixelis_ros.sim.bench import markdown as family_markdown
    from pixelis_ros.sim.bench import run_bench
    from pixelis_ros.sim.suites import iter_tasks, load_suite
    from pixelis_ros.tools import Toolbox

    rows, baseline = _rows(config)
    suite = load_suite(suite_name)
    tasks = list(iter_tasks(suite, episodes))  # generated once: every row sees the same pixels
    toolbox = Toolbox()
    results = []
    for row in rows:
        factory, model = _policy_factory(row["policy"], backend,
                                         lambda: iter_tasks(suite, episodes, start=episodes))
        diagnoses = []  # (family, diagnosis) per episode, in the tasks' order
        result = run_bench(tasks, factory, toolbox,
                           on_episode=lambda task, episode, out=diagnoses: out.append((task.family, diagnose(task, episode))))
        entry = {"name": row["name"], "policy": row["policy"], "mean_accuracy": result["mean_accuracy"],
                 "families": result["families"], "markdown": family_markdown(result, row["name"]),
                 "correct": [d["correct"] for _, d in diagnoses]}
        if model is not None:
            per_family = defaultdict(list)
            for family, d in diagnoses:
                per_family[family].append(d)
            entry["diagnosis"] = _diagnosis_summary(per_family)
        results.append(entry)
    base = next(r for r in results if r["name"] == baseline)
    base_correct = base["correct"]
    for r in results:
        b = base["mean_accuracy"]
        r["relative_gain"] = round((r["mean_accuracy"] - b) / b, 4) if b else None
        # paired on the same episodes: right here and wrong in the baseline, and the reverse
        pairs = list(zip(r.pop("correct"), base_correct))
        r["vs_baseline"] = {"wins": sum(mine and not theirs for mine, theirs in pairs),
                            "losses": sum(theirs and not mine for mine, theirs in pairs)}
    oracle_mean = next((r["mean_accuracy"] for r in results if r["policy"] == "oracle"), None)
    table = {"suite": suite.name, "episodes": len(tasks), "backend": backend, "baseline": baseline, "rows": results,
             "oracle_share": {r["name"]: round(r["mean_accuracy"] / oracle_mean, 4) if oracle_mean else None
                              for r in results},
             "markdown": summary_markdown(results, baseline)}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "table.json").write_text(json.dumps(table, indent=2) + "\n")
        (Path(out) / "table.md").write_text(table["markdown"] + "\n")
    return table


def summary_markdown(results: list[dict], baseline: str) -> str:
    families = list(results[0]["families"])
    head = ("| row | " + " | ".join(families) + " | mean | rel. gain vs " + baseline + " | episodes won/lost vs "
            + baseline + " | valid calls | chain |")
    lines = [head, "|" + "---|" * (len(families) + 6)]
    for r in results:
        fams = r["families"]
        calls = [f["valid_call_rate"] for f in fams.values() if f["valid_call_rate"] is not None]
        chain = statistics.fmean(f["mean_chain_length"] for f in fams.values())
        gain = "-" if r["relative_gain"] is None else f"{r['relative_gain'] * 100:+.1f}%"
        lines.append(f"| {r['name']} | " + " | ".join(f"{fams[f]['accuracy']:.2f}" for f in families)
                     + f" | **{r['mean_accuracy']:.3f}** | {gain} | {r['vs_baseline']['wins']}/{r['vs_baseline']['losses']} | "
                     + (f"{statistics.fmean(calls):.2f}" if calls else "-") + f" | {chain:.2f} |")
    diag = [r for r in results if "diagnosis" in r]
    if diag:
        lines += ["", "Where model rows fail (per family: tool choice / grounding / reading given grounding):", "",
                  "| row | " + " | ".join(families) + " |", "|" + "---|" * (len(families) + 1)]
        for r in diag:
            cells = []
            for f in families:
                d = r["diagnosis"].get(f, {})
                cells.append("/".join("-" if d.get(k) is None else f"{d[k]:.2f}" for k in ("tool_choice", "grounding", "reading")))
            lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
