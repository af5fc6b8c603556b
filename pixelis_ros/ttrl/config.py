"""The test-time RL settings as one typed config (``pixelis ttrl run --config T.yaml --set lr=1e-4``).

Loaded by ``training.config.load_config(..., cls=TTRLConfig)``, so YAML, ``--set`` and the errors
are the training recipes'. The defaults are what the bundled model was measured with on the
shifted suite (``pixelis ttrl run``); as in TRL a zero switches a term off and makes it free:
``beta: 0`` computes no KL to the EMA in the loss, ``neighbours: 0`` retrieves nothing,
``flip_limit: 0`` keeps no vote history.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pixelis_ros.training.config import ConfigError, check_ranges


@dataclass(frozen=True)
class TTRLConfig:
    """Label-free adaptation inside a KL-to-EMA corridor (DESIGN §1, phase 3)."""

    # --- the vote ------------------------------------------------------------------------------
    num_trajectories: int = 4
    """N: complete trajectories sampled per unlabelled query (the vote's electorate)."""
    temperature: float = 0.8
    """Sampling temperature of the text tokens in the N trajectories (the loss uses the same)."""
    pointer_temperature: float = 1.0
    """Temperature of the pointer distribution the grounding cell is sampled from."""
    consensus_share: float = 0.5
    """The winning group must hold at least this share of the N trajectories."""
    consensus_min: int = 3
    """... and at least this many trajectories; a split vote is skipped (no update)."""
    region_iou: float = 0.5
    """Two trajectories ground the same region when their boxes overlap at least this much (IoU)."""
    exemplars: int = 1
    """The winning group's shortest, most confident members the update trains toward (one keeps an
    update within the 2 s budget on 2 cores: two measured 3.2 s)."""
    # --- the update ----------------------------------------------------------------------------
    lora_r: int = 8
    """Rank of the test-time LoRA adapter on the language model (starts at zero: the base model)."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    lr: float = 1e-3
    """Adam learning rate of an update, before the corridor scales it."""
    steps_per_update: int = 2
    """Optimizer steps per accepted query (on its exemplars and the retrieved neighbours')."""
    beta: float = 0.05
    """Weight of the KL to the EMA adapter in the update's loss (k3 per token); 0 = off and free."""
    pointer_weight: float = 1.0
    """Weight of the pointer's chosen cell in the loss (1 = one token), as in CC-RFT."""
    ema_decay: float = 0.9
    """EMA anchor: ``ema = decay * ema + (1 - decay) * adapter``, after accepted updates only."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    # --- the corridor --------------------------------------------------------------------------
    kl_high: float = 0.05
    """Upper bound of KL(policy || EMA) on the probe set (nats per token): above it the update is
    rejected, the previous adapter restored and the step shrunk."""
    kl_low: float = 0.002
    """Lower bound: ``low_patience`` accepted updates in a row below it let the step grow."""
    low_patience: int = 3
    """Accepted updates below ``kl_low`` before the step grows."""
    shrink: float = 0.5
    """Step scale factor after a rejection."""
    grow: float = 1.5
    """Step scale factor after ``low_patience`` quiet updates."""
    min_scale: float = 0.05
    """Smallest step scale (the learning rate never falls below ``lr * min_scale``)."""
    max_scale: float = 2.0
    """Largest step scale."""
    drift_limit: float = 0.25
    """Rollback: when KL(policy || base model) on the probe set exceeds this, the adapter and the
    EMA go back to the newest snapshot whose drift was at most half of it (the base adapter when
    none was). It bounds how far a run of wrong majorities can carry the policy. 0 = off."""
    snapshots: int = 4
    """Snapshots kept for rollbacks (taken after every ``snapshot_every`` accepted updates)."""
    snapshot_every: int = 5
    """Accepted updates between snapshots."""
    probe_size: int = 6
    """Generated turns in the fixed probe set KL is measured on (the first queries' greedy turns)."""
    # --- memory and guard ----------------------------------------------------------------------
    memory_entries: int = 256
    """Most queries the memory keeps (oldest evicted first)."""
    memory_mb: float = 64.0
    """Most bytes the memory keeps (images of the exemplars' prompts included)."""
    neighbours: int = 2
    """Retrieved neighbours whose exemplars join an update; 0 = no retrieval."""
    min_similarity: float = 0.6
    """A stored query is a neighbour only above this cosine similarity."""
    same_item_similarity: float = 0.97
    """Above this similarity a query is the same item seen again (its votes are tracked together)."""
    flip_limit: int = 2
    """TTRL-Guard: an item whose vote winner changed this many times is polarised and skipped (its
    exemplars leave the memory); 0 = no vote history."""
    # --- agent and budget ----------------------------------------------------------------------
    max_steps_per_episode: int = 5
    """Agent turns per sampled trajectory."""
    max_new_tokens: int = 96
    """Longest generated turn."""
    updates_per_minute: float = 30.0
    """The background worker's budget: at most this many queries processed per minute (0 = no cap)."""
    queue_size: int = 4
    """Queries waiting for the worker; when full the oldest is dropped (serving never waits)."""
    threads: int = 1
    """torch threads of the worker (the serving policy keeps the rest)."""
    save_every: int = 1
    """Accepted updates between state saves (0 = only on stop)."""
    seed: int = 0
    """Seed of the sampler."""

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("num_trajectories", "consensus_min", "exemplars", "lora_r", "steps_per_update",
                                         "low_patience", "snapshots", "snapshot_every", "probe_size", "memory_entries",
                                         "max_steps_per_episode", "max_new_tokens", "queue_size", "threads"),
                     non_negative=("beta", "pointer_weight", "max_grad_norm", "kl_low", "drift_limit", "neighbours",
                                   "flip_limit", "updates_per_minute", "save_every", "seed"),
                     positive=("temperature", "pointer_temperature", "lr", "kl_high", "lora_alpha", "memory_mb",
                               "shrink", "grow", "min_scale", "max_scale"))
        for name in ("consensus_share", "region_iou", "ema_decay", "min_similarity", "same_item_similarity"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if self.consensus_min > self.num_trajectories:
            raise ConfigError(f"consensus_min ({self.consensus_min}) cannot exceed num_trajectories "
                              f"({self.num_trajectories}): no vote could pass")
        if self.kl_low >= self.kl_high:
            raise ConfigError(f"kl_low ({self.kl_low}) must be below kl_high ({self.kl_high})")
        if not self.min_scale <= 1.0 <= self.max_scale or self.shrink >= 1.0 or self.grow <= 1.0:
            raise ConfigError("the corridor's scales need min_scale <= 1 <= max_scale, shrink < 1 < grow")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
