"""Test-time RL: the trajectory vote on hand-made episodes (real tools on a simulator scene), the
corridor's bookkeeping, reject/restore and the EMA on the real learner (the bundled model),
retrieval of a planted neighbour, saved state (atomic under SIGKILL, clear errors for truncated or
foreign files), adapter swaps that a query never sees half-done (torch and ONNX Runtime), the node
with ``ttrl`` on, and the command's JSON contract."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from pixelis_ros.agent import Agent, AgentLimits  # noqa: E402
from pixelis_ros.policy.scripted import ScriptedPolicy  # noqa: E402
from pixelis_ros.tools import Toolbox  # noqa: E402
from pixelis_ros.training.config import ConfigError, load_config  # noqa: E402
from pixelis_ros.ttrl.config import TTRLConfig  # noqa: E402
from pixelis_ros.ttrl.corridor import Corridor  # noqa: E402
from pixelis_ros.ttrl.memory import Memory, embed  # noqa: E402
from pixelis_ros.ttrl.state import TTRLStateError, load_state, save_state  # noqa: E402
from pixelis_ros.ttrl.vote import vote  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "models" / "pixelis-small"


@pytest.fixture(autouse=True)
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tasks():
    from pixelis_ros.sim.suites import iter_tasks, load_suite

    return {t.family: t for t in iter_tasks(load_suite("smoke"))}


def zoom_then(box, answer: str) -> str:
    return (f'<think>Zoom in.</think>\n<tool_call>\n{{"name": "zoom", "arguments": {{"bbox_2d": {list(box)}}}}}\n'
            f'</tool_call>\n<answer>{answer}</answer>')


def episode(task, script: str):
    return Agent(ScriptedPolicy(script), Toolbox(), AgentLimits(max_steps=4)).run(task.question, task.frames)


# --- the vote ---------------------------------------------------------------------------------------

def test_vote_groups_trajectories_by_answer_operations_and_region(tasks):
    task = tasks["text"]
    near, far = (244.7, 29.0, 299.3, 57.0), (20.0, 300.0, 90.0, 360.0)
    shifted = (247.0, 30.0, 301.0, 58.0)  # IoU ~0.86 with ``near``: the same region
    episodes = [episode(task, zoom_then(near, "RAMP 15")), episode(task, zoom_then(shifted, "ramp 15")),
                episode(task, zoom_then(near, "RAMP 15")), episode(task, zoom_then(far, "RAMP 15")),
                episode(task, "<answer>RAMP 15</answer>")]
    result = vote(episodes, consensus_share=0.5, consensus_min=3, region_iou=0.5)
    assert result.passed and result.reason == "consensus" and result.answer == "ramp15"
    assert result.groups[0] == [0, 1, 2]  # same answer elsewhere, or without the zoom, is another trajectory
    assert sorted(map(sorted, result.groups[1:])) == [[3], [4]]
    strict = vote(episodes, consensus_share=0.5, consensus_min=3, region_iou=0.95)
    assert not strict.passed and strict.reason == "split"  # at IoU 0.95 the shifted box is another region


def test_split_votes_and_untrustworthy_trajectories_do_not_pass(tasks):
    task = tasks["text"]
    box = (244.7, 29.0, 299.3, 57.0)
    tie = [episode(task, zoom_then(box, "RAMP 15")), episode(task, zoom_then(box, "RAMP 15")),
           episode(task, zoom_then(box, "LAB 9")), episode(task, zoom_then(box, "LAB 9"))]
    assert vote(tie, 0.5, 2, 0.5).reason == "split"  # a tie is never a consensus
    bad = [episode(task, '<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": [1, 2]}}\n</tool_call>\n<answer>RAMP 15</answer>'),
           episode(task, '<tool_call>\n{"name": "fly", "arguments": {}}\n</tool_call>\n<answer>RAMP 15</answer>'),
           episode(task, "<think>no answer</think>"), episode(task, zoom_then(box, "RAMP 15"))]
    result = vote(bad, 0.25, 1, 0.5)
    assert sorted(result.abstained) == [0, 1, 2] and result.groups == [[3]]
    assert vote(bad, 0.5, 1, 0.5).reason == "split"  # 1 of 4 is below the share: abstentions count in N


# --- the corridor -------------------------------------------------------------------------------------

def test_corridor_rejects_shrinks_grows_and_detects_drift():
    config = TTRLConfig(kl_high=0.1, kl_low=0.01, low_patience=2, shrink=0.5, grow=2.0, max_scale=3.0, drift_limit=0.5)
    corridor = Corridor(config)
    assert not corridor.judge(0.2) and corridor.state.scale == 0.5 and corridor.state.rejected == 1
    assert not corridor.judge(float("nan"))
    assert corridor.judge(0.05) and corridor.state.quiet == 0
    assert corridor.judge(0.001) and corridor.judge(0.001) and corridor.state.scale == 0.5  # 0.25 * 2
    assert corridor.state.accepted == 3 and corridor.drifted(0.6) and not corridor.drifted(0.4)
    assert not Corridor(TTRLConfig(drift_limit=0)).drifted(1e9)  # 0 = off


def test_config_fields_are_checked():
    with pytest.raises(ConfigError, match="consensus_min"):
        load_config(None, {"num_trajectories": 2, "consensus_min": 3}, cls=TTRLConfig)
    with pytest.raises(ConfigError, match="kl_low"):
        load_config(None, ["kl_low=0.5", "kl_high=0.1"], cls=TTRLConfig)
    assert load_config(None, ["beta=0"], cls=TTRLConfig).beta == 0.0


# --- the learner on the bundled model ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ttrl(tasks):
    from pixelis_ros.policy.hf import load_hf_policy
    from pixelis_ros.ttrl.online import TestTimeRL

    torch.manual_seed(0)
    return TestTimeRL(load_hf_policy(BUNDLED, heads="auto", max_new_tokens=96), TTRLConfig(threads=2))


def expert_turns(ttrl, task):
    """The expert's turns of ``task`` as TurnRecords (what the agent showed, the expert's tokens)."""
    from pixelis_ros.cota import parse
    from pixelis_ros.training.rft_rollout import TurnRecord

    seen = []

    class Recording(ScriptedPolicy):
        def generate(self, messages, images):
            gen = super().generate(messages, images)
            seen.append(TurnRecord(list(messages), dict(images), ttrl.learner.policy.tokenizer.encode(gen.text)))
            return gen

    Agent(Recording(task.trace), Toolbox()).run(task.question, task.frames)
    assert len(seen) == len(parse(task.trace).steps)
    return seen


def test_rejected_update_restores_the_adapter_and_leaves_the_ema(ttrl, tasks):
    from pixelis_ros.ttrl.learner import ANCHOR, TRAINED

    learner = ttrl.learner
    turns = expert_turns(ttrl, tasks["text"])
    learner.add_probe(turns)
    adapter, ema = learner.state(TRAINED), learner.state(ANCHOR)
    ttrl.corridor.config = TTRLConfig(kl_high=1e-12, kl_low=1e-13)  # any movement leaves this corridor
    try:
        out = ttrl._update(turns)
    finally:
        ttrl.corridor.config = ttrl.config
    assert out["decision"] == "rejected" and out["kl"] > 1e-12 and ttrl.corridor.state.rejected == 1
    assert all(torch.equal(adapter[k], v) for k, v in learner.state(TRAINED).items())
    assert all(torch.equal(ema[k], v) for k, v in learner.state(ANCHOR).items())
    assert ttrl.counters.version == 0  # nothing new to serve


def test_accepted_update_moves_toward_the_exemplars_and_the_ema_follows(ttrl, tasks):
    from pixelis_ros.training.rft_loss import collate_turns, turn_sequence
    from pixelis_ros.ttrl.learner import ANCHOR, TRAINED

    learner = ttrl.learner
    turns = expert_turns(ttrl, tasks["fine_detail"])

    def logprob() -> float:
        seqs = [turn_sequence(learner.policy, t, 1.0) for t in turns]
        with torch.no_grad():
            tokens, _, _ = learner.model(collate_turns(seqs, learner.pad_id), seqs)
        return float(sum(t.sum() for t in tokens))

    before, ema_before = logprob(), learner.state(ANCHOR)
    ttrl.corridor.config = TTRLConfig(kl_high=10.0, kl_low=1e-6)
    try:
        out = ttrl._update(turns)
    finally:
        ttrl.corridor.config = ttrl.config
    assert out["decision"] == "accepted" and 0 < out["kl"] <= 10.0 and out["drift"] > 0
    assert logprob() > before  # the exemplars' tokens became more likely
    trained, ema = learner.state(TRAINED), learner.state(ANCHOR)
    moved = [k for k in ema if not torch.equal(ema[k], ema_before[k])]
    assert moved  # the EMA followed the accepted step ...
    d = 1 - ttrl.config.ema_decay
    k = moved[0]
    assert torch.allclose(ema[k], ema_before[k] * (1 - d) + trained[k] * d, atol=1e-6)  # ... by the decay
    assert ttrl.counters.version == 1


def test_rollback_returns_to_the_base_adapter_when_drift_is_too_large(ttrl, tasks):
    from pixelis_ros.ttrl.learner import TRAINED

    turns = expert_turns(ttrl, tasks["counting"])
    ttrl.corridor.config = TTRLConfig(kl_high=10.0, kl_low=1e-6, drift_limit=1e-9)
    try:
        out = ttrl._update(turns)
    finally:
        ttrl.corridor.config = ttrl.config
    assert out["decision"] == "rolled_back" and ttrl.corridor.state.rollbacks == 1
    assert out["drift"] == pytest.approx(0.0, abs=1e-9)  # no snapshot within half the limit: the base model
    assert all(float(v.abs().max()) == 0 for k, v in ttrl.learner.state(TRAINED).items() if ".lora_B." in k)


def test_process_runs_a_real_query_and_saves_and_restores_its_state(ttrl, tasks, tmp_path):
    record = ttrl.process(tasks["text"].question, tasks["text"].frames)
    assert record["decision"] in ("accepted", "rejected", "rolled_back", "split") and record["vote"]
    assert len(ttrl.memory.entries) >= 1
    path = ttrl.save(tmp_path / "state.safetensors", "model-a")
    from pixelis_ros.policy.hf import load_hf_policy
    from pixelis_ros.ttrl.learner import TRAINED
    from pixelis_ros.ttrl.online import TestTimeRL

    fresh = TestTimeRL(load_hf_policy(BUNDLED, heads="auto", max_new_tokens=96), ttrl.config)  # a restart
    fresh.restore(path, "model-a")
    assert all(torch.equal(v, ttrl.learner.state(TRAINED)[k]) for k, v in fresh.learner.state(TRAINED).items())
    assert fresh.counters.queries == ttrl.counters.queries and fresh.corridor.state == ttrl.corridor.state
    assert [e.question for e in fresh.memory.entries] == [e.question for e in ttrl.memory.entries]
    assert len(fresh.learner.probe) == len(ttrl.learner.probe)
    with pytest.raises(TTRLStateError, match="saved for another model"):
        fresh.restore(path, "model-b")


# --- memory -----------------------------------------------------------------------------------------

def test_retrieval_returns_the_planted_neighbour_and_memory_is_bounded(tasks):
    from pixelis_ros.training.rft_rollout import TurnRecord

    rng = np.random.default_rng(0)
    memory = Memory(max_entries=50, max_bytes=10 * 1024 * 1024)
    turn = TurnRecord([], {}, [1, 2, 3])
    for family, task in tasks.items():  # the smoke scenes, asked their own questions
        memory.set_exemplars(memory.add(task.question, embed(task.question, task.frames[-1].image)), [turn])
    target = tasks["counting"]
    for _ in range(30):  # distractors: noise images with unrelated questions
        noise = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        memory.set_exemplars(memory.add("how far is the door", embed("how far is the door", noise)), [turn])
    noisy = np.clip(target.frames[-1].image.astype(int) + rng.integers(-8, 9, target.frames[-1].image.shape), 0, 255)
    found = memory.nearest(embed(target.question, noisy.astype(np.uint8)), k=2, min_similarity=0.5)
    assert found and found[0].question == target.question
    assert memory.same_item(embed(target.question, noisy.astype(np.uint8)), 0.9) is found[0]
    small = Memory(max_entries=3, max_bytes=1 << 30)
    for i in range(5):
        small.add(f"q{i}", embed(f"q{i}", target.frames[-1].image))
    assert [e.question for e in small.entries] == ["q2", "q3", "q4"]
    one = target.frames[-1].image.nbytes
    tiny = Memory(max_entries=100, max_bytes=int(2.5 * one))
    big = TurnRecord([{"role": "user", "content": [{"type": "image", "image": "frame:-1"}]}],
                     {"frame:-1": target.frames[-1].image, "frame:3": target.frames[-1].image}, [1])
    for i in range(4):
        tiny.set_exemplars(tiny.add(f"q{i}", embed(f"q{i}", target.frames[-1].image)), [big])
    assert tiny.nbytes <= 2.5 * one and [e.question for e in tiny.entries] == ["q2", "q3"]  # oldest evicted
    assert list(tiny.entries[-1].exemplars[0].images) == ["frame:-1"]  # slimmed to what its prompt shows


# --- saved state ------------------------------------------------------------------------------------

SAVER = """
import sys, numpy as np
from pixelis_ros.ttrl.state import load_state, save_state, TTRLStateError
path = sys.argv[1]
try:
    tensors, doc = load_state(path, "m")
    n = doc["n"]
except TTRLStateError:
    n = 0
rng = np.random.default_rng(n)
while True:
    n += 1
    value = np.full((512, 1024), n, np.float32)  # 2 MB: a save takes long enough to be killed mid-way
    save_state(path, {"adapter/w": value, "ema/w": value}, {"n": n}, "m")
    print(n, flush=True)
"""


def test_sigkill_during_saves_always_leaves_the_last_good_state(tmp_path):
    path = tmp_path / "ttrl_state.safetensors"
    rng = np.random.default_rng(1)
    last = 0
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        first = int(proc.stdout.readline())
        assert first == last + 1  # the restart loaded the last good state
        time.sleep(float(rng.uniform(0.0, 0.15)))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        printed = [first] + [int(x) for x in out.split()]
        tensors, doc = load_state(path, "m")
        assert doc["n"] in (printed[-1], printed[-1] + 1)  # the last save completed, or one not yet reported
        assert float(tensors["adapter/w"][0, 0]) == doc["n"] and (tensors["ema/w"] == doc["n"]).all()
        last = doc["n"]
    assert not [p for p in tmp_path.iterdir() if p.name != path.name and not p.name.startswith(".")]


def test_truncated_foreign_and_mismatched_state_files_are_clear_errors(tmp_path):
    from safetensors.numpy import save_file

    path = save_state(tmp_path / "s.safetensors", {"adapter/w": np.ones((4, 4), np.float32)}, {"n": 1}, "m")
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(TTRLStateError, match="truncated or corrupted"):
        load_state(tmp_path / "cut.safetensors", "m")
    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(TTRLStateError, match="not a pixelis test-time state"):
        load_state(tmp_path / "foreign.safetensors", "m")
    (tmp_path / "zero.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(TTRLStateError, match="delete"):
        load_state(tmp_path / "zero.safetensors", "m")
    with pytest.raises(TTRLStateError, match="another model"):
        load_state(path, "other")
    with pytest.raises(TTRLStateError, match="cannot read"):
        load_state(tmp_path / "missing.safetensors", "m")


# --- serving swaps --------------------------------------------------------------------------------

def _randomise(state: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.5 for k, v in state.items()}


def test_torch_swap_happens_between_episodes_only(ttrl, tasks):
    from pixelis_ros.policy.hf import load_hf_policy
    from pixelis_ros.ttrl.learner import TRAINED
    from pixelis_ros.ttrl.serving import SwappablePolicy

    serving = SwappablePolicy(load_hf_policy(BUNDLED, heads="auto"), ttrl.config.lora_r, ttrl.config.lora_alpha)
    new = _randomise(ttrl.learner.state(TRAINED), 1)
    task = tasks["text"]
    versions = []

    class Watching:  # the agent's view: every turn records the adapter version it ran with
        profile = serving.profile

        def reset(self):
            serving.reset()

        def generate(self, messages, images):
            versions.append(serving.version)
            if len(versions) == 1:
                serving.offer(7, new)  # the worker offers mid-episode
            return serving.generate(messages, images)

    agent = Agent(Watching(), Toolbox(), AgentLimits(max_steps=3))
    agent.run(task.question, task.frames)
    assert set(versions) == {0}  # the whole first query ran on the old adapter
    agent.run(task.question, task.frames)
    assert set(versions[-1:]) == {7} and serving.version == 7
    assert all(torch.equal(serving._params[k], new[k]) for k in new)


def test_onnx_swap_matches_the_torch_adapter(tiny_models, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pixelis_ros.policy.bundled import cached_onnx
    from pixelis_ros.policy.hf import load_hf_policy
    from pixelis_ros.policy.onnx import load_onnx_policy
    from pixelis_ros.ttrl.learner import TRAINED, Learner
    from pixelis_ros.ttrl.serving import SwappablePolicy

    monkeypatch.setenv("PIXELIS_CACHE", str(tmp_path / "cache"))
    config = TTRLConfig(lora_r=4, lora_alpha=8)
    onnx_dir = cached_onnx(tiny_models["qwen3_vl"], config.lora_r, config.lora_alpha)
    assert cached_onnx(tiny_models["qwen3_vl"], 4, 8) == onnx_dir  # cached
    learner = Learner(load_hf_policy(tiny_models["qwen3_vl"], heads="off", max_new_tokens=12), config)
    learner.load_state(_randomise(learner.state(TRAINED), 2), TRAINED)
    serving = SwappablePolicy(load_onnx_policy(onnx_dir, max_new_tokens=12, heads="off"), 4, 8)
    messages = [{"role": "user", "content": [{"type": "image", "image": "frame:-1"}, {"type": "text", "text": "What is red?"}]}]
    frames = {"frame:-1": (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)}
    base = serving.generate(messages, frames).token_ids
    serving.offer(1, learner.state(TRAINED))
    assert serving.generate(messages, frames).token_ids == base  # offered, not yet swapped
    serving.reset()
    swapped = serving.generate(messages, frames).token_ids
    torch_ids = learner.policy.generate(messages, frames).token_ids
    assert swapped == torch_ids and swapped != base
    with pytest.raises(Exception, match="rank"):
        SwappablePolicy(serving.policy, 8, 16)


# --- the node and the command ---------------------------------------------------------------------

def test_node_with_ttrl_answers_learns_and_survives_a_corrupted_state(tasks, tmp_path):
    from pixelis_ros import messages as M
    from pixelis_ros.node.agent_core import AgentNodeCore
    from pixelis_ros.node.config import AgentNodeConfig
    from pixelis_ros.ttrl.state import STATE_FILE

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / STATE_FILE).write_bytes(b"not a state file at all")
    settings = tmp_path / "ttrl.yaml"  # near-greedy single trajectories: a vote that can pass on one query
    settings.write_text("num_trajectories: 1\nconsensus_min: 1\ntemperature: 0.05\npointer_temperature: 0.05\n"
                        "kl_high: 100.0\nupdates_per_minute: 0\nthreads: 1\n")
    published = []
    config = AgentNodeConfig(ttrl=True, model=str(BUNDLED), ttrl_config=str(settings), ttrl_state=str(tmp_path / "state"),
                             max_frame_age_s=0, publish_annotated=False)
    core = AgentNodeCore(config, lambda t, m: published.append((t, m)))
    core.activate()
    try:
        assert "not a readable state file" in core.ttrl.last_error  # reported; the base adapter serves
        task = tasks["fine_detail"]
        for frame in task.frames:
            core.on_image(M.image_msg(frame.image, frame.stamp, "cam"))
        core.on_query(task.question)
        deadline = time.monotonic() + 240
        while core.ttrl.processed < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert core.ttrl.processed == 1, "the worker never processed the answered query"
        assert core.ttrl.last.get("decision") in ("accepted", "split", "rejected", "rolled_back"), core.ttrl.last
        core.on_query(task.question)  # the node keeps answering while (and after) the worker learns
        deadline = time.monotonic() + 120
        while len([1 for t, _ in published if t == "answer"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        core.deactivate()
    answers = [json.loads(m.data) for t, m in published if t == "answer"]
    assert len(answers) == 2 and all(a.get("error") is None for a in answers)
    values = {kv.key: kv.value for kv in [m for t, m in published if t == "diagnostics"][-1].status[0].values}
    assert values["ttrl"] == "on" and values["ttrl_queries"] in ("1", "2")
    state = tmp_path / "state" / STATE_FILE
    from pixelis_ros.ttrl.worker import model_identity

    _, doc = load_state(state, model_identity(BUNDLED, load_config(str(settings), cls=TTRLConfig)))  # saved on stop
    assert doc["counters"]["queries"] >= 1


def test_ttrl_off_costs_nothing():
    probe = ("import sys; from pixelis_ros.node.agent_core import AgentNodeCore; "
             "from pixelis_ros.node.config import AgentNodeConfig; "
             "core = AgentNodeCore(AgentNodeConfig(accept_scripts=True), lambda t, m: None); core.activate(); "
             "core.deactivate(); print(core.ttrl, any(m.startswith('pixelis_ros.ttrl') for m in sys.modules), "
             "'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["None", "False", "False"], out.stderr


def pixelis(*args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-m", "pixelis_ros", *args], capture_output=True, text=True, timeout=timeout,
                         env=env, cwd=REPO)
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_ttrl_run_prints_the_contract(tmp_path):
    code, result, stderr = pixelis("ttrl", "run", "--suite", "smoke", "--episodes", "3", "--out", str(tmp_path),
                                   "--set", "num_trajectories=3", "--set", "consensus_min=2", "--json")
    assert code == 0, stderr
    assert set(result) >= {"frozen_accuracy", "adapted_accuracy", "relative_gain", "kl", "updates_accepted",
                           "updates_rejected", "rollbacks", "mean_chain_length"}
    assert set(result["kl"]) == {"min", "max", "mean", "in_corridor_share"}
    assert set(result["mean_chain_length"]) == {"frozen", "adapted"}
    assert result["episodes"] == 3 and (tmp_path / "ttrl.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (tmp_path / "stream.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all("decision" in r for r in rows)
    code, result, _ = pixelis("ttrl", "run", "--episodes", "3", "--set", "kl_low=1", "--json")
    assert code == 2 and "kl_low" in result["error"]
