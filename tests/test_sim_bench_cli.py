"""`pixelis sim bench` and `pixelis bench sim`: their JSON contracts, end to end."""

from __future__ import annotations

import json
import subprocess
import sys


def pixelis(*args: str, ok: bool = True) -> dict:
    proc = subprocess.run([sys.executable, "-m", "pixelis_ros.cli", *args], capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sim_bench_contract_oracle_and_no_tool():
    oracle = pixelis("sim", "bench", "--suite", "smoke", "--policy", "oracle", "--episodes", "6", "--json")
    assert set(oracle["families"]) == {"counting", "fine_detail", "spatial", "temporal", "text", "tracking"}
    for row in oracle["families"].values():
        assert {"accuracy", "acting_success", "mean_chain_length", "valid_call_rate", "episodes"} <= set(row)
        assert row["episodes"] == 1 and row["mean_chain_length"] >= 1
    assert 0 <= oracle["mean_accuracy"] <= 1 and oracle["markdown"].startswith("| family (oracle)")
    floor = pixelis("sim", "bench", "--suite", "smoke", "--policy", "noTool", "--episodes", "6", "--json")
    assert all(r["mean_chain_length"] == 0 and r["acting_success"] == 0 for r in floor["families"].values())
    # failures, as `pixelis sim loop` reports them: every episode answered wrong or off target
    assert [f["index"] for f in floor["failures"]] == list(range(6))  # no tools: no episode hits its target
    assert all(set(f) == {"index", "family", "question", "truth", "answer", "hit", "error"} for f in floor["failures"])
    assert {f["family"] for f in floor["failures"]} == set(floor["families"]) and not any(f["hit"] for f in floor["failures"])
    missed = {f["family"] for f in oracle["failures"]}  # one episode per family: failed iff its family's scores say so
    assert missed == {n for n, r in oracle["families"].items() if r["accuracy"] < 1 or r["acting_success"] < 1}
    assert all(isinstance(f["truth"], str) and f["question"] for f in oracle["failures"] + floor["failures"])
    error = pixelis("sim", "bench", "--suite", "smoke", "--policy", "models/none", "--json", ok=False)["error"]
    assert error == "--policy 'models/none': not 'model', 'oracle', 'noTool' or a model folder"


def test_sim_bench_serves_a_model_folder(tiny_models, tmp_path):
    """A random tiny model scores near zero, but the whole path runs: folder -> backend -> agent -> tools -> score."""
    folder = tiny_models["qwen2_5_vl"]
    result = pixelis("sim", "bench", "--suite", "smoke", "--model", str(folder), "--episodes", "1", "--seed", "3", "--json")
    assert sum(r["episodes"] for r in result["families"].values()) == 1 and 0 <= result["mean_accuracy"] <= 1
    assert (result["backend"], result["model"]) == ("torch", str(folder))  # auto: read from the folder
    [failure] = result["failures"]  # a random model: wrong, and the failure says what it answered
    assert failure["index"] == 3 and failure["answer"] != failure["truth"]
    wrong = pixelis("sim", "bench", "--suite", "smoke", "--model", str(folder), "--backend", "onnx", "--json", ok=False)
    assert wrong["error"].startswith(f"--model {folder}: {folder} is a torch model folder")
    broken = tmp_path / "broken"
    broken.mkdir()
    error = pixelis("sim", "bench", "--suite", "smoke", "--policy", str(broken), "--json", ok=False)["error"]
    assert error.startswith(f"--policy {broken}: ") and "config.json" in error


def test_bench_sim_reports_render_speed():
    speed = pixelis("bench", "sim", "--repeats", "2", "--json")
    assert speed["median_ms"]["scene_generate_and_rgbd_render"] > 0
    assert set(speed["task_median_ms"]) == {"counting", "fine_detail", "spatial", "temporal", "text", "tracking"}
