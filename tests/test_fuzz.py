"""Our own fuzzers (``pixelis_ros/fuzz``), seeded and small: through the agent loop, the image
codec, the bag reader and model folders nothing but our domain errors may escape, every error
message is bounded, nothing hangs and no case takes more memory than the pixel cap allows
(issue #13). The larger run is ``python -m pixelis_ros.fuzz --cases 10000 --json``.

The runner's own classification is checked on a probe target whose cases fail on purpose, and the
grammar and the raw image fields are also searched with Hypothesis, in-process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixelis_ros.cota import parse_turn
from pixelis_ros.fuzz import MAX_MESSAGE_CHARS, bench_fuzz, mutate, split_cases
from pixelis_ros.fuzz.__main__ import main as fuzz_main
from pixelis_ros.fuzz.run import TargetSpec, run_cases, summarize
from pixelis_ros.image_codec import ImageDecodeError, image_from_fields, to_rgb8

SEED = 13
# Small enough for `make test` (the model target loads a tiny checkpoint per case).
COUNTS = {"agent": 300, "image": 400, "bag": 24, "model": 5}
# Peak RSS of a worker: the 1 GB, except that torch and transformers alone take ~750 MB
# and a loaded tiny policy ~220 MB more.
PEAK_MB = {"agent": 1024, "image": 1024, "bag": 1024, "model": 1536}


@pytest.fixture(scope="module")
def fuzzed() -> dict:
    records, peaks, wall = run_cases(COUNTS, seed=SEED, jobs=2)
    return summarize(records, peaks, wall, SEED)


def failures(summary: dict, target: str) -> str:
    mine = [f for f in summary["first_failures"] if f["target"] == target]
    classes = {k: n for k, n in summary["failure_classes"].items() if k.startswith(target + "/")}
    return json.dumps({"classes": classes, "first": mine}, indent=1, ensure_ascii=True)[:6000]


@pytest.mark.parametrize("target", list(COUNTS))
def test_fuzz_target_lets_only_domain_errors_out(fuzzed, target):
    t = fuzzed["targets"][target]
    assert t["cases"] == COUNTS[target]
    problems = {k: t[k] for k in ("internal_errors", "hangs", "unbounded_messages", "over_memory")}
    assert problems == dict.fromkeys(problems, 0), failures(fuzzed, target)
    assert t["max_message_chars"] <= MAX_MESSAGE_CHARS
    assert t["errors"] > 0  # the cases are malformed: some must be refused, in our words
    assert t["peak_rss_mb"] < PEAK_MB[target]


def test_runner_classifies_each_way_a_case_can_end():
    specs = {"probe": TargetSpec("fuzz_probe:ProbeTarget", 5.0, 1.0)}
    # Seed 14 gives each of the probe's kinds among 10 cases, with one hang, one crash, one big allocation.
    records, peaks, wall = run_cases({"probe": 10}, seed=14, targets=specs)
    by_kind = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    assert set(by_kind) == {"ok", "domain", "internal", "long_message", "hang", "memory", "crash"}
    status = {kind: {r["status"] for r in rs} for kind, rs in by_kind.items()}
    assert status == {"ok": {"ok"}, "domain": {"error"}, "internal": {"internal"}, "long_message": {"error"},
                      "hang": {"hang"}, "memory": {"ok"}, "crash": {"internal"}}
    assert by_kind["internal"][0]["error_type"] == "KeyError"
    assert by_kind["crash"][0]["error_type"] == "WorkerDied"
    assert by_kind["domain"][0]["message"] == "a bad input, said in our words"
    summary = summarize(records, peaks, wall, 14)
    assert summary["internal_errors"] == 2 and summary["hangs"] == 1
    assert summary["unbounded_messages"] == 2 and summary["over_memory"] == 1
    assert summary["peak_rss_mb"] > 800
    assert [r["index"] for r in records] == list(range(10))  # the cases after a hang and a crash still ran


def test_bench_fuzz_json_and_case_split(capsys):
    assert split_cases(10000) == {"agent": 4850, "image": 4850, "bag": 200, "model": 100}
    assert sum(split_cases(2000, ["agent", "bag"]).values()) == 2000
    with pytest.raises(ValueError, match="unknown fuzz target"):
        split_cases(10, ["codec"])
    summary = bench_fuzz(8, seed=1, targets=["image"])
    assert summary["cases"] == summary["targets"]["image"]["cases"] == 8
    assert {"internal_errors", "hangs", "peak_rss_mb", "wall_s", "first_failures", "failure_classes"} <= set(summary)
    fuzz_main(["--cases", "4", "--targets", "image", "--json", "--seed", "2"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["cases"] == 4 and printed["seed"] == 2


# --- in-process, with Hypothesis ---------------------------------------------------------------------
PIECES = list("<>/{}[]\":, a1\\\n") + ["<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>",
                                      '{"name": "zoom", "arguments": ', '"bbox_2d": [', "9" * 4400, "1e309", "\ud800", "\u200b"]
TAGGY = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)
NUMBER = st.one_of(st.sampled_from(mutate.HUGE_INTS + mutate.BAD_NUMBERS), st.integers().map(str), st.floats().map(repr))
CALL = st.builds('<tool_call>\n{{"name": "zoom", "arguments": {{"bbox_2d": [{}, 0, 50, {}], "image": {}}}}}\n</tool_call>'.format,
                 NUMBER, NUMBER, st.one_of(st.text(max_size=20), st.sampled_from(mutate.ODD_STRINGS)).map(json.dumps))


@settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(TAGGY, CALL, st.text(max_size=3000)))
def test_parse_turn_never_raises_and_its_errors_are_bounded(text):
    step = parse_turn(text)
    assert step.error is None or len(step.error) <= MAX_MESSAGE_CHARS
    assert step.error is not None or (step.call is not None) != (step.answer is not None)


UINT32 = st.integers(0, 2**32 - 1)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(height=st.one_of(st.integers(0, 64), UINT32), width=st.one_of(st.integers(0, 64), UINT32),
       step=st.one_of(st.integers(0, 256), UINT32), encoding=st.one_of(st.sampled_from(["rgb8", "bgra8", "mono16", "32FC1", "yuv422", "8UC1"]), st.text(max_size=20)),
       is_bigendian=st.integers(0, 255), data=st.binary(max_size=4096))
def test_raw_image_fields_decode_or_raise_our_error(height, width, step, encoding, is_bigendian, data):
    try:
        img = image_from_fields(height, width, encoding, is_bigendian, step, data)
    except ImageDecodeError as e:
        assert len(str(e)) <= MAX_MESSAGE_CHARS
        return
    rgb = to_rgb8(img)
    assert rgb.shape[:2] == (height, width) and rgb.dtype == np.uint8
    assert img.nbytes <= 4 * len(data)  # a view of the message, never a blown-up copy
