"""CC-RFT: each reward on hand-made episodes (real tools on simulator scenes), group advantages,
the loss's masking of tool tokens, the pointer's update toward the rewarded cell, a few real RL
steps (full and LoRA) on the bundled SFT model, the collapse watch and the recipes' checks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from pixelis_ros.agent import Agent  # noqa: E402
from pixelis_ros.policy.scripted import ScriptedPolicy  # noqa: E402
from pixelis_ros.tools import Toolbox  # noqa: E402
from pixelis_ros.training import rft_rewards as R  # noqa: E402
from pixelis_ros.training.config import ConfigError, load_config  # noqa: E402
from pixelis_ros.training.rft_config import RFTConfig  # noqa: E402
from pixelis_ros.training.rft_loss import (PolicyLogProbs, chunk_loss, collate_turns, group_advantages,  # noqa: E402
                                           turn_sequence)
from pixelis_ros.training.rft_rollout import TurnRecord  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SFT_MODEL = REPO / "models" / "pixelis-small-sft"  # the recipe's start


@pytest.fixture(scope="module")
def tasks():
    from pixelis_ros.sim.suites import iter_tasks, load_suite

    return {t.family: t for t in iter_tasks(load_suite("smoke"))}


class Recorder(ScriptedPolicy):
    """A scripted policy that also keeps what the agent showed it before each turn."""

    def __init__(self, script: str):
        super().__init__(script)
        self.seen: list[tuple[list, dict]] = []

    def generate(self, messages, images):
        self.seen.append((list(messages), dict(images)))
        return super().generate(messages, images)


def run(task, script: str, max_steps: int = 8):
    from pixelis_ros.agent import AgentLimits

    policy = Recorder(script)
    return Agent(policy, Toolbox(), AgentLimits(max_steps=max_steps)).run(task.question, task.frames), policy


def config(**fields) -> RFTConfig:
    return load_config(None, {"model": str(SFT_MODEL), "output_dir": "unused", **fields}, cls=RFTConfig)


ZOOM = '<think>The sign is small; zoom in on it.</think>\n<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": [244.7, 29.0, 299.3, 57.0]}}\n</tool_call>'


# --- rewards --------------------------------------------------------------------------------------

def test_expert_episode_earns_every_positive_term(tasks):
    task = tasks["fine_detail"]
    episode, _ = run(task, task.trace)
    assert R.correctness(task, episode) == 1.0 and R.acting(task, episode) == 1.0
    assert R.invalid_turns(episode) == 0 and R.efficiency(episode) == 1.0 and R.tool_bonus(task, episode) == 1.0
    assert R.coherence(episode) == 1.0  # "zoom in on it", then "Segment it in the zoomed view" on obs:0
    assert not R.truncated(episode)


def test_coherence_penalises_repeats_and_ignoring_the_zoom(tasks):
    task = tasks["text"]
    repeated, _ = run(task, ZOOM + ZOOM + "<answer>EXIT</answer>")
    assert R.coherence(repeated) == pytest.approx((1.0 - 1.0) / 2)
    assert R.correctness(task, repeated) == 0.0 and R.tool_bonus(task, repeated) == 0.0
    assert R.efficiency(repeated) == 1.0
    # OCR on the frame after zooming: the thought names the operation, the call ignores the crop.
    ignored, _ = run(task, ZOOM + '<think>Read it.</think>\n<tool_call>\n{"name": "ocr", "arguments": {}}\n</tool_call>'
                     "<answer>x</answer>")
    assert R.coherence(ignored) == pytest.approx((1.0 + 0.5) / 2)
    expert, _ = run(task, task.trace)
    assert R.coherence(expert) == 1.0 and R.correctness(task, expert) == 1.0


def test_invalid_turns_tool_rate_and_truncation(tasks):
    task = tasks["counting"]
    broken, _ = run(task, '<tool_call>\n{"name": "zoom", "arguments": \n</tool_call><answer>1</answer>')
    refused, _ = run(task, '<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": [5, 5, 6, 6]}}\n</tool_call>'
                     "<answer>1</answer>")
    assert R.invalid_turns(broken) == 1 and R.invalid_turns(refused) == 1
    assert R.calls(broken) == [] and R.coherence(broken) == 0.0 and R.efficiency(broken) == 0.0
    assert R.correctness(task, broken) == 1.0 and R.tool_bonus(task, broken) == 0.0  # right, but without a tool
    expert, _ = run(task, task.trace)
    assert R.tool_call_rate([expert, broken, refused, expert]) == 0.5
    cut, _ = run(task, ZOOM * 3, max_steps=2)
    assert cut.stop_reason == "max_steps" and R.truncated(cut)


def test_curiosity_normalises_caps_and_gates():
    errors = [np.array([1.0, 3.0]), np.array([]), np.array([10.0])]  # group mean error 14/3
    paid = R.curiosity(errors, rate=0.5, cap=2.0, gate=1.0)
    assert paid == pytest.approx([(1 + 3) / 2 / (14 / 3), 0.0, 2.0])  # the third is capped
    assert R.curiosity(errors, rate=1.0, cap=2.0, gate=1.0) == [0.0, 0.0, 0.0]  # tool use is not low: no bonus
    assert R.curiosity([np.array([]), np.array([])], rate=0.0, cap=2.0, gate=1.0) == [0.0, 0.0]


def test_forward_model_learns_what_tools_return(tasks):
    task = tasks["text"]
    episode, _ = run(task, task.trace)
    pairs = R.call_features(episode, task.frames)
    assert len(pairs) == 2 and pairs[0][0].shape == (R.ForwardModel.IN,) and pairs[0][1].shape == (R.ForwardModel.OUT,)
    model = R.ForwardModel(lr=1e-2, seed=0)
    first = model.errors(pairs)
    for _ in range(50):
        last = model.errors(pairs)
    assert (last < first / 2).all(), (first, last)  # a result seen before surprises less


def test_group_rewards_weigh_and_switch_terms_off(tasks):
    task = tasks["fine_detail"]
    expert, _ = run(task, task.trace)
    broken, _ = run(task, "<answer>blue</answer>")
    c = config()
    rewards = R.group_rewards(task, [expert, broken], c, R.ForwardModel(c.curiosity_lr))
    assert rewards.correct == [1.0, 0.0] and rewards.tool_call_rate == 0.5
    assert set(rewards.terms) == {"correctness", "acting", "invalid", "curiosity", "coherence", "efficiency", "tool_bonus"}
    assert rewards.terms["curiosity"][0] > 0 and rewards.terms["curiosity"][1] == 0  # gate open: half the group skipped tools
    expected = 1.0 + 0.2 + 0.0 + rewards.terms["curiosity"][0] + 0.2 * 1.0 - 0.05 * 1 + 0.1
    assert rewards.total[0] == pytest.approx(expected) and rewards.total[1] == 0.0
    only = config(acting_weight=0, invalid_penalty=0, curiosity_weight=0, coherence_weight=0, efficiency_penalty=0,
                  tool_bonus=0)
    assert set(R.group_rewards(task, [expert, broken], only, None).terms) == {"correctness"}


# --- advantages and the loss ------------------------------------------------------------------------

def test_advantages_are_group_normalised():
    assert group_advantages([0.7, 0.7, 0.7, 0.7]) == [0.0, 0.0, 0.0, 0.0]
    a = group_advantages([1.0, 0.0, 0.0, 1.0])
    assert sum(a) == pytest.approx(0.0) and a[0] > 0 > a[1] and a[0] == pytest.approx(a[3])
    assert np.std(a, ddof=1) == pytest.approx(1.0, abs=1e-3)


@pytest.fixture(scope="module")
def sft_policy():
    from pixelis_ros.policy.hf import load_hf_policy

    return load_hf_policy(SFT_MODEL)


def _model(policy):
    return PolicyLogProbs(policy.model, policy.heads, temperature=1.0, pointer_temperature=1.0)


def test_tool_tokens_get_no_gradient(tasks, sft_policy):
    task = tasks["text"]
    _, recorder = run(task, task.trace)
    messages, images = recorder.seen[1]  # the OCR turn: the zoom's response and its crop are in the prompt
    assert any("<tool_response>" in str(m["content"]) for m in messages) and "obs:0" in images
    ids = sft_policy.tokenizer.encode('<tool_call>\n{"name": "ocr", "arguments": {"image": "obs:0"}}\n</tool_call>')
    seq = turn_sequence(sft_policy, TurnRecord(messages, images, ids), advantage=1.0)
    batch = collate_turns([seq], pad_id=0)
    captured = {}

    def keep(module, inputs, out):
        out.retain_grad()
        captured["logits"] = out

    hook = sft_policy.model.get_output_embeddings().register_forward_hook(keep)
    try:
        tokens, pointers, _ = _model(sft_policy)(batch, [seq])
        old = ([t.detach() for t in tokens], pointers)
        total, _ = chunk_loss([seq], (tokens, pointers), old, None, config(beta=0))
        total.backward()
    finally:
        hook.remove()
        sft_policy.model.zero_grad(set_to_none=True)
    grad = captured["logits"].grad[0].abs().sum(-1)
    response = sft_policy.tokenizer.convert_tokens_to_ids("<tool_response>")
    positions = (batch["input_ids"][0] == response).nonzero()[:, 0]
    assert len(positions) and (positions < seq.prompt_len).all()
    assert grad[:seq.prompt_len - 1].sum() == 0  # prompt, tool response and crop tokens: no loss term
    assert (grad[seq.prompt_len - 1:seq.prompt_len - 1 + seq.n_tokens] > 0).all()


def test_pointer_update_moves_toward_the_rewarded_cell(tasks, sft_policy):
    from pixelis_ros.policy.heads_numpy import call_token_position

    task = tasks["text"]
    _, recorder = run(task, task.trace)
    messages, images = recorder.seen[0]
    ids = sft_policy.tokenizer.encode(ZOOM.split("<tool_call>")[0] + '<tool_call>\n{"name": "zoom", "arguments": '
                                          '{"bbox_2d": [382, 60, 467, 119]}}\n</tool_call>')
    position = call_token_position(sft_policy.tokenizer, ids)
    probe = turn_sequence(sft_policy, TurnRecord(messages, images, ids, ("frame:-1", 0, position)), 0.0)
    model = _model(sft_policy)
    heads_state = {k: v.clone() for k, v in sft_policy.heads.state_dict().items()}

    def probs() -> torch.Tensor:
        with torch.no_grad():
            out = sft_policy.model(**collate_turns([probe], 0), output_hidden_states=True)
            hidden = out.hidden_states[-1][0]
            keys, query, _ = probe.pointer
            return torch.softmax(sft_policy.heads.pointer_logits(hidden[query][None], hidden[keys][None])[0], -1)

    before = probs()
    good, bad = int(before.argsort()[-3]), int(before.argmax())  # reward the third choice, punish the first
    # A group of two trajectories identical but for the pointed cell; only the first was right.
    advantages = group_advantages([1.0, 0.0])
    seqs = [turn_sequence(sft_policy, TurnRecord(messages, images, ids, ("frame:-1", cell, position)), a)
            for cell, a in ((good, advantages[0]), (bad, advantages[1]))]
    optimizer = torch.optim.SGD(sft_policy.heads.parameters(), lr=0.01)
    try:
        tokens, pointers, _ = model(collate_turns(seqs, 0), seqs)
        old = ([t.detach() for t in tokens], [p.detach() for p in pointers])
        total, _ = chunk_loss(seqs, (tokens, pointers), old, None, config(beta=0))
        total.backward()
        # the text tokens are identical in both sequences: their advantages cancel
        optimizer.step()
        after = probs()
    finally:
        sft_policy.heads.load_state_dict(heads_state)
        sft_policy.model.zero_grad(set_to_none=True)
    assert after[good] > before[good] and after[bad] < before[bad], (before[[good, bad]], after[[good, bad]])


# --- RL steps on the bundled model -----------------------------------------------------------------

def _rft(tmp_path, **fields):
    from pixelis_ros.training.rft import train_rft

    c = config(output_dir=str(tmp_path), suite="smoke", start_episode=0, max_steps=3, groups_per_step=2,
               num_generations=3, max_steps_per_episode=4, save_steps=2, collapse_window=1, threads=2, **fields)
    return train_rft(c, progress=False)


def test_rl_steps_change_the_policy_and_keep_the_kl_finite(tmp_path):
    from safetensors.torch import load_file

    summary = _rft(tmp_path, lr=1e-4)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["kl"]) and r["kl"] >= 0 for r in rows) and rows[-1]["kl"] > 0
    assert all(0 <= r["tool_call_rate"] <= 1 and r["pointer_entropy"] > 0 for r in rows)
    header = (tmp_path / "log.csv").read_text().splitlines()[0].split(",")
    assert {"accuracy", "tool_call_rate", "chain", "valid_call_rate", "kl", "pointer_entropy", "r_curiosity",
            "r_coherence"} <= set(header)
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "checkpoint-2" / "model.safetensors").is_file()
    before, after = load_file(SFT_MODEL / "model.safetensors"), load_file(tmp_path / "final" / "model.safetensors")
    assert sum(not torch.equal(before[k], after[k]) for k in before) > len(before) // 2
    heads_before, heads_after = load_file(SFT_MODEL / "heads.safetensors"), load_file(tmp_path / "final" / "heads.safetensors")
    assert any(not torch.equal(heads_before[k], heads_after[k]) for k in heads_before)
    assert summary["rollouts"] == 3 * 2 * 3 and summary["steps_per_s"] > 0
    from pixelis_ros.policy.registry import load_policy

    assert load_policy("torch", tmp_path / "final").options.heads == "refine"


def test_lora_rl_steps_anchor_on_the_adapter_disabled_model(tmp_path):
    from pixelis_ros.policy.registry import load_policy

    _rft(tmp_path, lora_r=4, lr=1e-3)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["kl"]) for r in rows) and rows[-1]["kl"] > 0
    final = tmp_path / "final"
    assert (final / "adapter_model.safetensors").is_file() and not (final / "model.safetensors").exists()
    policy = load_policy("torch", SFT_MODEL, adapter=str(final))
    assert policy.active_adapter == "final" and policy.options.heads == "refine"


def test_collapse_watch_warns_on_falling_tool_use_and_long_chains():
    from pixelis_ros.training.rft import CollapseWatch

    watch = CollapseWatch(window=2)
    assert [watch.update(s, rate, 2.0) for s, rate in enumerate([1.0, 0.9, 0.8, 0.6], 1)] == [None] * 4
    assert "COLLAPSING" in watch.update(5, 0.1, 2.0)
    chains = CollapseWatch(window=1)
    chains.update(1, 1.0, 1.5)
    assert chains.update(2, 1.0, 3.0) is None and "EXPLODING" in chains.update(3, 1.0, 3.1)


# --- recipes ----------------------------------------------------------------------------------------

def pixelis(*args):
    return subprocess.run([sys.executable, "-m", "pixelis_ros", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def test_recipes_check_and_bad_fields_are_one_error(tmp_path):
    from test_training_sft import write_qwen3_vl_8b_config

    run_ = pixelis("train", "rft", "--config", "training/configs/rft_small.yaml", "--check", "--json")
    assert run_.returncode == 0, run_.stderr
    report = json.loads(run_.stdout)
    assert report["ok"] and report["heads"] is True and report["model"]["arch"] == "qwen3_vl"
    assert report["suite"]["name"] == "train"
    folder = tmp_path / "Qwen3-VL-8B-Instruct"
    write_qwen3_vl_8b_config(folder)
    run_ = pixelis("train", "rft", "--config", "training/configs/rft_qwen3_vl_8b.yaml", "--set", f"model={folder}",
                   "--check", "--json")
    assert run_.returncode == 0, run_.stdout + run_.stderr
    report = json.loads(run_.stdout)
    assert 8.0e9 < report["model"]["parameters"] < 9.5e9 and report["adapter"].startswith("missing")
    assert report["config"]["dtype"] == "bfloat16" and report["accelerate"]["multi_gpu.yaml"]["distributed_type"] == "MULTI_GPU"
    for bad, message in (("beta=-1", "beta must be >= 0"), ("num_generations=1", "num_generations must be >= 2"),
                         ("gamma=1", "unknown field(s) ['gamma']"), ("suite=test", "the test suite scores the table")):
        run_ = pixelis("train", "rft", "--config", "training/configs/rft_small.yaml", "--set", bad, "--check", "--json")
        assert run_.returncode == 2 and message in json.loads(run_.stdout)["error"], run_.stdout
    with pytest.raises(ConfigError, match="pointer_temperature must be > 0"):
        config(pointer_temperature=0)


def test_table_counts_paired_wins_and_losses(tmp_path):
    from pixelis_ros.training.table import sft_table

    rows = tmp_path / "rows.yaml"
    rows.write_text("baseline: prior\nrows:\n  - {name: prior, policy: noTool}\n  - {name: oracle, policy: oracle}\n")
    table = sft_table(rows, episodes=6)
    prior, oracle = table["rows"]
    assert prior["vs_baseline"] == {"wins": 0, "losses": 0}
    paired = oracle["vs_baseline"]
    assert paired["wins"] - paired["losses"] == round((oracle["mean_accuracy"] - prior["mean_accuracy"]) * 6)
    assert paired["wins"] > 0 and f"| {paired['wins']}/{paired['losses']} |" in table["markdown"]
