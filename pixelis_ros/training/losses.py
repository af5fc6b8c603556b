"""The SFT objective: weighted next-token cross-entropy on the assistant turns plus the auxiliary
heads' grounding losses, computed from one forward pass of the backbone.

Normalisation: the token loss is ``sum(w_i * ce_i) / (number of target tokens)``, so a weight
rescales exactly the tokens it names and nothing else (dividing by ``sum(w_i)`` instead would
shrink every other token when a weight grows). Heads read the last hidden state, the same tensor
the backends read at inference (``output_hidden_states``' last entry): the pointer's query is the
state at each call's ``<tool_call>`` token, its keys the states of the named image's tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pixelis_ros.policy.heads import GroundingHeads, box_loss, point_loss, pointer_loss, target_cell, time_loss


class SFTModel(nn.Module):
    """Backbone + optional heads as one module (one optimizer, one DDP wrapper, one state to save)."""

    def __init__(self, backbone: nn.Module, heads: GroundingHeads | None):
        super().__init__()
        self.backbone = backbone
        self.heads = heads

    def forward(self, batch: dict, weights: dict[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")
                  if k in batch}
        need_hidden = self.heads is not None and bool(batch["targets"])
        out = self.backbone(**inputs, output_hidden_states=need_hidden)
        lm, tokens = token_loss(out.logits, batch["labels"], batch["weights"])
        parts = {"lm": float(lm.detach()), "tokens": tokens}
        total = lm
        if need_hidden:
            head_losses = self.head_losses(out.hidden_states[-1], batch["targets"], weights["giou"])
            for name, value in head_losses.items():
                total = total + weights[name] * value
                parts[name] = float(value.detach())
        return total, parts

    def head_losses(self, hidden: torch.Tensor, targets: list, giou_weight: float) -> dict[str, torch.Tensor]:
        device = hidden.device
        n_keys = [rows * cols for _, _, _, rows, cols, *_ in targets]
        keys = torch.zeros(len(targets), max(n_keys), hidden.shape[-1], device=device, dtype=hidden.dtype)
        mask = torch.zeros(len(targets), max(n_keys), dtype=torch.bool, device=device)
        for j, ((b, _, start, *_), n) in enumerate(zip(targets, n_keys)):
            keys[j, :n] = hidden[b, start:start + n]
            mask[j, :n] = True
        query = torch.stack([hidden[b, q] for b, q, *_ in targets])
        grid = torch.tensor([[rows, cols] for _, _, _, rows, cols, *_ in targets], device=device)
        boxes = [t[5] for t in targets]
        points = [t[6] for t in targets]
        # A call with a box points at the box's centre; one with only a point at the point.
        anchor = torch.tensor([list(b) if b is not None else list(p) + list(p) for b, p in zip(boxes, points)],
                              device=device, dtype=torch.float32)
        cell = target_cell(anchor, grid)
        pred = self.heads(query.float(), keys.float(), grid, mask, chosen=cell)
        out = {"pointer": pointer_loss(pred["pointer_logits"], cell)}
        with_box = [j for j, b in enumerate(boxes) if b is not None]
        if with_box:
            idx = torch.tensor(with_box, device=device)
            out["box"] = box_loss(pred["box"][idx], anchor[idx], giou_weight)
        with_point = [j for j, p in enumerate(points) if p is not None]
        if with_point:
            idx = torch.tensor(with_point, device=device)
            out["point"] = point_loss(pred["point"][idx], anchor[idx, :2])
        with_time = [j for j, t in enumerate(targets) if t[7] is not None]
        if with_time:
            idx = torch.tensor(with_time, device=device)
            times = torch.tensor([targets[j][7] for j in with_time], device=device, dtype=torch.float32)
            out["time"] = time_loss(pred["time"][idx], times)
        return out


def token_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Weighted next-token cross-entropy over target tokens (label != -100), normalised by their count."""
    logits = logits[:, :-1].float()
    labels, weights = labels[:, 1:], weights[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none")
    count = int((labels != -100).sum())
    return (ce * weights.reshape(-1)).sum() / max(count, 1), count
