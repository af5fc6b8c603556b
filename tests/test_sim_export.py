"""Suite export: deterministic files whatever the worker count, complete records, and the
``pixelis sim export`` command's JSON contract and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from pixelis_ros.cota import answer_quote, resolve_quote
from pixelis_ros.sim.export import export_suite
from pixelis_ros.sim.families import FAMILIES
from pixelis_ros.sim.suites import load_suite

RECORD_FIELDS = ["id", "index", "family", "seed", "question", "answer", "question_type", "tolerance", "target_boxes",
                 "frame_stamps", "images", "image_files", "depth_files", "obs_files", "trace", "messages", "expert_answer",
                 "expert_correct", "tool_failures"]


def pixelis(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pixelis_ros.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """The smoke suite (one episode per family) exported twice: in this process with one worker,
    and by the command with two spawned workers."""
    root = tmp_path_factory.mktemp("export")
    summary_a = export_suite(load_suite("smoke"), root / "a", workers=1)
    proc = pixelis("sim", "export", "--suite", "smoke", "--out", str(root / "b"), "--workers", "2", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary_b = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"a": root / "a", "b": root / "b", "summary_a": summary_a, "summary_b": summary_b}


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "episodes.jsonl").read_text(encoding="utf-8").splitlines()]


def test_two_exports_are_byte_identical(exports):
    a, b = files(exports["a"]), files(exports["b"])
    assert sorted(a) == sorted(b)
    assert [k for k in a if a[k] != b[k]] == ["timing.json"]  # timing is the one file allowed to differ
    assert {"episodes.jsonl", "manifest.json", "timing.json"} <= set(a)


def test_records_are_complete_and_in_episode_order(exports):
    recs = records(exports["a"])
    assert [r["index"] for r in recs] == list(range(6))
    assert sorted(r["family"] for r in recs) == sorted(FAMILIES)
    for r in recs:
        assert list(r) == RECORD_FIELDS
        assert r["id"] == f"{r['family']}-{r['seed']}"
        assert r["question"] and r["answer"] and r["trace"].endswith("</answer>")
        assert len(r["images"]) == len(r["frame_stamps"])
        assert r["image_files"]["frame:-1"] == r["images"][-1]
        assert all(r["image_files"][f"frame:{k}"] == p for k, p in enumerate(r["images"]))
        assert r["expert_correct"] or r["tool_failures"]  # a wrong expert answer always says why
        assert all(len(box) == 4 for box in r["target_boxes"])


def test_images_exist_and_decode(exports):
    out = exports["a"]
    recs = records(out)
    for r in recs:
        for rel in r["images"]:
            img = cv2.imread(str(out / rel))
            assert img is not None and img.shape == (480, 640, 3), rel
        for rel in r["depth_files"].values():
            depth = cv2.imread(str(out / rel), cv2.IMREAD_UNCHANGED)
            assert depth.dtype.name == "uint16" and depth.shape == (480, 640) and depth.max() > 500  # millimetres
    video = [r for r in recs if r["family"] in ("tracking", "temporal")]
    assert video and all(len(r["images"]) > 1 for r in video)
    assert all(len(r["images"]) == 1 for r in recs if r not in video)
    assert any(r["depth_files"] for r in recs if r["family"] == "spatial")
    # Exactly the files the records name, nothing stale.
    named = {p for r in recs for p in r["images"] + list(r["depth_files"].values()) + list(r["obs_files"].values())}
    assert named == {k for k in files(out) if k.startswith("images/")}


def test_messages_follow_the_trace(exports):
    folder = exports["a"]
    for r in records(folder):
        msgs = r["messages"]
        assert msgs[0]["role"] == "system"
        system = msgs[0]["content"][0]["text"]
        for tool in ("zoom", "ocr", "segment", "track", "temporal"):
            assert f'"name": "{tool}"' in system
        user = msgs[1]
        assert user["role"] == "user" and user["content"][0] == {"type": "image", "image": "frame:-1"}
        assert user["content"][-1] == {"type": "text", "text": r["question"]}
        assert msgs[-1]["role"] == "assistant"
        final = msgs[-1]["content"][0]["text"]
        body = final[final.index("<answer>") + 8:final.index("</answer>")]
        path = answer_quote(body)  # an answer may quote the last tool response's field
        last = json.loads(msgs[-2]["content"][0]["text"].split("\n", 1)[1].rsplit("\n", 1)[0]) if path else None
        assert (resolve_quote(path, last)[0] if path else body) == r["expert_answer"]
        shown = [c["image"] for m in msgs[2:] for c in m["content"] if c["type"] == "image"]
        assert shown == sorted(set(shown), key=lambda ref: int(ref.split(":")[1]))  # obs:0, obs:1, ... once each
        assert all(ref.startswith("obs:") for ref in shown)
        assert sorted(r["obs_files"]) == sorted(shown)  # every image a tool returned is stored
        assert all((folder / p).is_file() for p in r["obs_files"].values())


def test_manifest_and_summary(exports):
    manifest = json.loads((exports["a"] / "manifest.json").read_text())
    assert manifest["suite"] == "smoke" and manifest["episodes"] == 6
    assert manifest["fields"] == load_suite("smoke").to_json()
    assert manifest["families"] == {f: 1 for f in load_suite("smoke").families}
    assert set(manifest["oracle_accuracy_by_family"]) == set(FAMILIES)
    assert manifest["tool_failures"]["episodes"] == sum(bool(r["tool_failures"]) for r in records(exports["a"]))
    timing = json.loads((exports["a"] / "timing.json").read_text())
    assert timing["seconds"] > 0 and timing["workers"] == 1
    for summary, workers in ((exports["summary_a"], 1), (exports["summary_b"], 2)):
        assert set(summary) >= {"out", "episodes", "families", "oracle_accuracy", "seconds"}
        assert summary["episodes"] == 6 and summary["families"] == manifest["families"]
        assert summary["oracle_accuracy"] == manifest["oracle_accuracy"] and summary["workers"] == workers
    assert exports["summary_b"]["out"] == str(exports["b"])


def test_a_smaller_export_replaces_the_previous_one(exports, tmp_path):
    out = tmp_path / "c"
    export_suite(load_suite("smoke"), out, episodes=3, workers=1)
    export_suite(load_suite("smoke"), out, episodes=2, workers=1)
    assert (out / "episodes.jsonl").read_text().splitlines() == (exports["a"] / "episodes.jsonl").read_text().splitlines()[:2]
    assert len(list((out / "images").iterdir())) == 2


def test_cli_errors_exit_2(tmp_path):
    proc = pixelis("sim", "export", "--suite", "nope", "--out", str(tmp_path / "x"), "--json")
    assert proc.returncode == 2
    error = json.loads(proc.stdout)["error"]
    assert "unknown suite 'nope'" in error and "['shifted', 'smoke', 'test', 'train', 'val']" in error
    proc = pixelis("sim", "export", "--suite", "nope", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "known suites" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("families: {text: 1}\nwidth: 641\n")
    proc = pixelis("sim", "export", "--suite", str(bad), "--out", str(tmp_path / "x"), "--json")
    assert proc.returncode == 2 and "multiple of 2" in json.loads(proc.stdout)["error"]
    proc = pixelis("sim", "export", "--suite", "smoke", "--out", str(tmp_path / "x"), "--workers", "0")
    assert proc.returncode == 2 and "positive integer" in proc.stderr
    assert not (tmp_path / "x").exists()
