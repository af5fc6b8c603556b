"""Auxiliary grounding heads on the backbone's hidden states (DESIGN §4.5, §6).

A small model never learned to ground by generating box digits; a pointer over image tokens did.
So grounding has its own path:

- **pointer**: query = last-layer hidden state at the ``<tool_call>`` token, keys = hidden states
  of the named image's tokens (one per 2x2 merged patch); scaled dot product; cross-entropy
  target = the token whose cell holds the object's centre.
- **box**: from the query and the 3x3 neighbourhood of the chosen token (the single-token
  regressor reached only IoU 0.40: an object spans several cells), an MLP predicts the centre
  offset from the chosen cell and the log size in cells.
- **point**: same features, the point's offset from the chosen cell's centre.
- **time**: from the query alone, start/end as fractions of the clip (temporal/track calls).

Everything is in coordinates normalised to the named image (0..1 on both axes), so the heads are
independent of the backbone's coordinate convention and of the image size; the caller scales to
internal pixels. Any hidden size works (the 8B included): only ``hidden_size`` is read from the
backbone. Saved as ``heads.safetensors`` + ``heads_config.json`` next to the model or adapter.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# file names and sizes are shared with the torch-free inference path (heads_numpy)
from pixelis_ros.policy.heads_numpy import HEADS_CONFIG, HEADS_FILE, HeadsConfig, read_heads
from pixelis_ros.policy.model_folder import ModelFolderError


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.GELU(), nn.Linear(hidden, out))


class GroundingHeads(nn.Module):
    def __init__(self, config: HeadsConfig):
        super().__init__()
        self.config = config
        h, p, k = config.hidden_size, config.proj_dim, config.neighbourhood
        self.norm = nn.LayerNorm(h)  # hidden states of different backbones have very different scales
        self.query = nn.Linear(h, p)
        self.key = nn.Linear(h, p)
        self.cell = nn.Linear(h, p)
        feat = p + k * k * (p + 1)  # query + each neighbour's features and its in-image flag
        self.box = _mlp(feat, config.mlp_dim, 4)
        self.point = _mlp(feat, config.mlp_dim, 2)
        self.time = _mlp(p, config.mlp_dim, 2)

    def pointer_logits(self, query: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[B, N]`` of each image token for queries ``[B, H]`` and keys ``[B, N, H]``."""
        q = self.query(self.norm(query))
        k = self.key(self.norm(keys))
        logits = torch.einsum("bp,bnp->bn", q, k) / self.config.proj_dim ** 0.5
        return logits if key_mask is None else logits.masked_fill(~key_mask, float("-inf"))

    def _features(self, query: torch.Tensor, keys: torch.Tensor, grid: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        b, n, _ = keys.shape
        r = self.config.neighbourhood // 2
        cells = self.cell(self.norm(keys))  # [B, N, P]
        rows, cols = grid[:, 0], grid[:, 1]
        cy, cx = chosen // cols, chosen % cols
        feats, flags = [], []
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                y, x = cy + dy, cx + dx
                inside = (y >= 0) & (y < rows) & (x >= 0) & (x < cols)
                idx = torch.where(inside, y * cols + x, torch.zeros_like(chosen)).clamp(max=n - 1)
                f = cells[torch.arange(b, device=keys.device), idx] * inside[:, None]
                feats.append(f)
                flags.append(inside[:, None].to(keys.dtype))
        return torch.cat([self.query(self.norm(query))] + feats + flags, dim=-1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, grid: torch.Tensor, key_mask: torch.Tensor | None = None,
                chosen: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Heads' outputs for a batch.

        ``query [B, H]``, ``keys [B, N, H]`` (row-major cells of each sample's named image, padded,
        ``key_mask [B, N]``), ``grid [B, 2]`` (rows, cols), ``chosen [B]`` the cell the box/point
        heads read (training: the target cell, teacher-forced; default: the pointer's argmax).
        Returns ``pointer_logits [B, N]``, ``chosen [B]``, ``box [B, 4]`` (normalised x1 y1 x2 y2),
        ``point [B, 2]`` and ``time [B, 2]`` (normalised, start <= end).
        """
        logits = self.pointer_logits(query, keys, key_mask)
        if chosen is None:
            chosen = logits.argmax(-1)
        feats = self._features(query, keys, grid, chosen)
        rows, cols = grid[:, 0].to(query.dtype), grid[:, 1].to(query.dtype)
        cx = (chosen % grid[:, 1]).to(query.dtype) + 0.5
        cy = (chosen // grid[:, 1]).to(query.dtype) + 0.5
        b = self.box(feats)
        bx, by = (cx + b[:, 0]) / cols, (cy + b[:, 1]) / rows
        bw, bh = torch.exp(b[:, 2].clamp(-6, 6)) / cols, torch.exp(b[:, 3].clamp(-6, 6)) / rows
        box = torch.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], dim=-1)
        p = torch.tanh(self.point(feats))  # within the neighbourhood
        point = torch.stack([(cx + p[:, 0] * (self.config.neighbourhood / 2)) / cols,
                             (cy + p[:, 1] * (self.config.neighbourhood / 2)) / rows], dim=-1)
        t = torch.sigmoid(self.time(self.query(self.norm(query))))
        time = torch.stack([t.min(-1).values, t.max(-1).values], dim=-1)
        return {"pointer_logits": logits, "chosen": chosen, "box": box, "point": point, "time": time}


def target_cell(box_or_point: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Index of the cell holding the centre of normalised boxes ``[B, 4]`` (or points ``[B, 2]``)."""
    if box_or_point.shape[-1] == 4:
        centre = (box_or_point[:, :2] + box_or_point[:, 2:]) / 2
    else:
        centre = box_or_point
    rows, cols = grid[:, 0], grid[:, 1]
    x = (centre[:, 0] * cols).floor().long().clamp(min=0)
    y = (centre[:, 1] * rows).floor().long().clamp(min=0)
    return torch.minimum(y, rows - 1) * cols + torch.minimum(x, cols - 1)


# --- losses -------------------------------------------------------------------------------------

def pointer_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the pointer over image tokens (masked tokens carry -inf logits)."""
    return F.cross_entropy(logits, target)


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of box pairs ``[B, 4]`` (x1 y1 x2 y2)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a + area_b - inter
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0).prod(-1)
    iou = inter / union.clamp(min=1e-9)
    return iou - (hull - union) / hull.clamp(min=1e-9)


def box_loss(pred: torch.Tensor, target: torch.Tensor, giou_weight: float = 1.0) -> torch.Tensor:
    """L1 + GIoU loss of normalised boxes."""
    return F.l1_loss(pred, target) + giou_weight * (1 - giou(pred, target)).mean()


def point_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred, target)


def time_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred, target)


# --- files --------------------------------------------------------------------------------------

def save_heads(heads: GroundingHeads, folder: str | Path) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in heads.state_dict().items()}, str(folder / HEADS_FILE))
    (folder / HEADS_CONFIG).write_text(json.dumps(asdict(heads.config), indent=2) + "\n", encoding="utf-8")
    return folder / HEADS_FILE


def load_heads(folder: str | Path, hidden_size: int | None = None) -> GroundingHeads:
    """Heads saved by ``save_heads``; ``hidden_size`` is the backbone's, checked against the file."""
    config, arrays = read_heads(folder, hidden_size)
    weights, config_path = Path(folder) / HEADS_FILE, Path(folder) / HEADS_CONFIG
    heads = GroundingHeads(config)
    state = {name: torch.from_numpy(array) for name, array in arrays.items()}
    try:
        heads.load_state_dict(state)
    except RuntimeError as e:
        raise ModelFolderError(f"{weights} does not match {config_path} ({str(e).splitlines()[0]}); re-save the heads") \
            from None
    return heads.eval()
