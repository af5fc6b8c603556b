"""One GRPO step of ours, with TRL's semantics, over recorded multi-turn trajectories.

Why not TRL's ``GRPOTrainer`` (checked on a tiny model in ``tests/test_trl_grpo_tools.py``): TRL
1.16 on the transformers path does feed a tool's returned image into the next turn and into the
loss forward, but its multi-turn history is the model's raw completion tokens plus the tool's
suffix, so a call executed with the pointer head's box (refine mode) cannot be shown to the next
turn as executed, and its loss takes only per-token log-probabilities: there is no place for an
action outside the token sequence — the pointer's sampled cell, the part of the policy that most
limits accuracy. Carrying both would mean overriding the trainer's generation, scoring and loss.
The semantics are TRL's (``GRPOConfig``): advantages normalised within
each group (``(r - mean) / (std + 1e-4)``, unbiased std), the clipped ratio with ``epsilon`` /
``epsilon_high``, the ``dapo`` normalisation (sum over every completion token of the batch
divided by their count), the k3 KL estimator against the reference weighted by ``beta``, and
truncated trajectories masked out (``mask_truncated_completions``).

Each generated turn is one sequence: the prompt the agent showed (tool responses and returned
images are prompt tokens: masked, no gradient) followed by the generated tokens (the loss's
tokens). The pointer's sampled cell joins as one more "token" with weight ``pointer_weight``: its
log-probability under the current heads (on the hidden states of this very forward pass) enters
the ratio, the clip and the KL like a text token's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pixelis_ros.training.rft_rollout import Trajectory, TurnRecord


def group_advantages(rewards: list[float]) -> list[float]:
    """TRL's group-normalised advantages; all zero when the group's rewards are equal."""
    r = np.asarray(rewards, np.float64)
    std = r.std(ddof=1) if len(r) > 1 else 0.0
    return ((r - r.mean()) / (std + 1e-4)).tolist()


@dataclass
class TurnSequence:
    """One turn ready for the forward pass."""

    inputs: dict  # processor outputs of prompt + generated tokens (batch of one)
    prompt_len: int
    n_tokens: int
    advantage: float
    pointer: tuple[torch.Tensor, int, int] | None  # (key positions, query position, cell)


def turn_sequence(policy, turn: TurnRecord, advantage: float) -> TurnSequence:
    inputs, refs, _ = policy.prepare(turn.messages, turn.images)
    prompt_len = inputs["input_ids"].shape[1]
    gen = torch.tensor([turn.token_ids], device=inputs["input_ids"].device, dtype=inputs["input_ids"].dtype)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], gen], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in inputs:
        inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(gen)], dim=1)
    pointer = None
    if turn.pointer is not None:
        ref, cell, position = turn.pointer
        keys, _, _ = policy.image_cells(inputs, refs, ref)
        pointer = (keys, prompt_len + position, cell)
    return TurnSequence(dict(inputs), prompt_len, len(turn.token_ids), advantage, pointer)


def collate_turns(seqs: list[TurnSequence], pad_id: int) -> dict:
    """Right-padded batch; images of every sequence in order."""
    length = max(s.inputs["input_ids"].shape[1] for s in seqs)
    b = len(seqs)
    device = seqs[0].inputs["input_ids"].device
    input_ids = torch.full((b, length), pad_id, dtype=torch.long, device=device)
    attention = torch.zeros((b, length), dtype=torch.long, device=device)
    mm = torch.zeros((b, length), dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        n = s.inputs["input_ids"].shape[1]
        input_ids[i, :n], attention[i, :n] = s.inputs["input_ids"][0], 1
        if "mm_token_type_ids" in s.inputs:
            mm[i, :n] = s.inputs["mm_token_type_ids"][0]
    batch = {"input_ids": input_ids, "attention_mask": attention}
    if any("mm_token_type_ids" in s.inputs for s in seqs):
        batch["mm_token_type_ids"] = mm
    with_images = [s for s in seqs if "pixel_values" in s.inputs]
    if with_images:
        batch["pixel_values"] = torch.cat([s.inputs["pixel_values"] for s in with_images])
        batch["image_grid_thw"] = torch.cat([s.inputs["image_grid_thw"] for s in with_images])
    return batch


class PolicyLogProbs(nn.Module):
    """Backbone + heads as one module (one DDP wrapper): per-token log-probabilities of each
    sequence's generated tokens and of its pointer choice, at the rollout temperatures."""

    def __init__(self, backbone: nn.Module, heads: nn.Module | None, temperature: float, pointer_temperature: float):
        super().__init__()
        self.backbone, self.heads = backbone, heads
        self.temperature, self.pointer_temperature = temperature, pointer_temperature

    def forward(self, batch: dict, seqs: list[TurnSequence]) -> tuple[list[torch.Tensor], list[torch.Tensor | None],
                                                                         list[torch.Tensor | None]]:
        need_pointer = self.heads is not None and any(s.pointer is not None for s in seqs)
        out = self.backbone(**batch, output_hidden_states=need_pointer)
        tokens, pointers, entropies = [], [], []
        for i, s in enumerate(seqs):
            # logits at position t predict token t + 1: the generated tokens are predicted from prompt_len - 1 on
            logits = out.logits[i, s.prompt_len - 1:s.prompt_len - 1 + s.n_tokens].float() / self.temperature
            targets = batch["input_ids"][i, s.prompt_len:s.prompt_len + s.n_tokens]
            tokens.append(torch.log_softmax(logits, -1).gather(-1, targets[:, None])[:, 0])
            if need_pointer and s.pointer is not None:
                keys, query, cell = s.pointer
                hidden = out.hidden_states[-1][i]
                ptr = self.heads.pointer_logits(hidden[query][None].float(), hidden[keys][None].float())[0]
                logp = torch.log_softmax(ptr / self.pointer_temperature, -1)
                pointers.append(logp[cell])
                entropies.append(-(logp.exp() * logp).sum().detach())
            else:
                pointers.append(None)
                entropies.append(None)
        return tokens, pointers, entropies


def k3(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """TRL's per-token KL estimate: exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased)."""
    d = ref - logp
    return torch.exp(d) - d - 1


def clipped_objective(logp: torch.Tensor, old: torch.Tensor, advantage: float, epsilon: float,
                      epsilon_high: float) -> torch.Tensor:
    """Per-token ``-min(ratio * A, clip(ratio) * A)``."""
    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon_high)
    return -torch.minimum(ratio * advantage, clipped * advantage)


def sequence_loss(logp: torch.Tensor, old: torch.Tensor, ref: torch.Tensor | None, advantage: float, config,
                  weight: float = 1.0) -> tuple[torch.Tensor, float]:
    """Sum over one sequence's tokens (or one pointer choice) of the GRPO objective, and of the KL."""
    loss = clipped_objective(logp, old, advantage, config.epsilon, config.epsilon_high)
    kl = 0.0
    if ref is not None and config.beta:
        per_token = k3(logp, ref)
        loss = loss + config.beta * per_token
        kl = float(per_token.detach().sum())
    return weight * loss.sum(), weight * kl


def chunk_loss(chunk: list[TurnSequence], current: tuple, old: tuple, ref: tuple | None, config) -> tuple[torch.Tensor, float]:
    """Summed objective and KL of a chunk of sequences: ``current``/``old``/``ref`` are
    ``(token log-probs, pointer log-probs)`` per sequence (a pointer entry is None without one).
    Divide by the batch's token count (pointer choices weigh ``pointer_weight``) for the dapo loss."""
    total, kl_sum = torch.zeros(()), 0.0
    for j, s in enumerate(chunk):
        loss, kl = sequence_loss(current[0][j], old[0][j], ref[0][j] if ref else None, s.advantage, config)
        total, kl_sum = total + loss, kl_sum + kl
        if current[1][j] is not None and config.pointer_weight:
            loss, kl = sequence_loss(current[1][j][None], old[1][j][None],
                                     ref[1][j][None] if ref and ref[1][j] is not None else None,
                                     s.advantage, config, config.pointer_weight)
            total, kl_sum = total + loss, kl_sum + kl
    return total, kl_sum


def token_count(seqs: list[TurnSequence], pointer_weight: float) -> float:
    """The dapo denominator: generated tokens of the batch, plus its weighted pointer choices."""
    return sum(s.n_tokens + pointer_weight * (s.pointer is not None) for s in seqs) or 1.0


def trajectory_turns(trajectories: list[Trajectory], with_zero_advantage: bool) -> list[tuple[TurnRecord, float]]:
    """The turns the loss trains on: not masked, and (without a KL term) with a nonzero advantage
    (their gradient would be exactly zero)."""
    return [(turn, t.advantage) for t in trajectories if not t.masked
            and (with_zero_advantage or abs(t.advantage) > 1e-8) for turn in t.turns if turn.token_ids]
