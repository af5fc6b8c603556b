"""The CC-RFT recipe as one typed config (``pixelis train rft --config R.yaml --set beta=0``).

Loaded by ``config.load_config(..., cls=RFTConfig)``, so YAML, ``--set`` and the errors are the
SFT recipe's. As in TRL, a zero switches a term off and makes it free: ``beta: 0`` loads no
reference model and computes no KL, ``curiosity_weight: 0`` trains no forward model,
``coherence_weight: 0`` skips the coherence check.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pixelis_ros.training.config import ConfigError, check_choice, check_ranges


@dataclass(frozen=True)
class RFTConfig:
    """GRPO over whole pixel-tool episodes with curiosity, coherence and a KL anchor (DESIGN §1, phase 2)."""

    model: str
    """The SFT model folder to start from; it is also the KL anchor (the reference policy)."""
    output_dir: str
    """Where checkpoints (``checkpoint-<step>/``), ``final/``, ``log.csv``, curves and the summary go."""
    adapter: str = ""
    """A LoRA adapter folder from an SFT run on ``model`` (the 8B recipe): a second, trainable copy
    of it is what RFT updates, the first stays loaded as the reference (no second model copy);
    ``final/`` is then an adapter folder for ``model``."""
    suite: str = "train"
    """Simulator suite the prompts come from (never the test suite the table scores)."""
    start_episode: int = 5000
    """First episode index of the suite used (after the episodes SFT was exported from)."""
    max_steps: int = 60
    """Optimizer steps."""
    groups_per_step: int = 2
    """Prompts (scenes) per step and process; each gets a group of ``num_generations`` trajectories."""
    num_generations: int = 6
    """G: complete trajectories per prompt, all on the same scene."""
    temperature: float = 0.8
    """Sampling temperature of the text tokens during rollouts (the loss uses the same)."""
    pointer_temperature: float = 1.0
    """Temperature of the pointer distribution the grounding cell is sampled from (refine mode)."""
    max_steps_per_episode: int = 5
    """Agent turns per trajectory; a trajectory cut off here is masked out of the loss, not penalised."""
    max_new_tokens: int = 96
    """Longest generated turn; a turn cut at this length masks its trajectory."""
    lr: float = 5e-5
    """AdamW learning rate (constant after ``warmup_steps``)."""
    heads_lr: float = 5e-4
    """Learning rate of the grounding heads (the pointer learns faster than the backbone)."""
    warmup_steps: int = 5
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    beta: float = 0.02
    """KL anchor to the SFT policy (k3 estimator per token and per pointer choice); 0 = off and free."""
    epsilon: float = 0.2
    """Lower clip of the importance ratio (1 - epsilon)."""
    epsilon_high: float = 0.28
    """Upper clip of the importance ratio (1 + epsilon_high), as DAPO's clip-higher."""
    num_iterations: int = 1
    """Optimizer passes over each batch of rollouts (TRL's mu); above 1 the ratio clip is active."""
    pointer_weight: float = 1.0
    """Weight of the pointer's sampled choice in the policy-gradient and KL terms (1 = one token)."""
    correctness_weight: float = 1.0
    """Reward for a correct answer (the simulator's label)."""
    acting_weight: float = 0.2
    """Reward when the episode's action points inside the task's acting target."""
    invalid_penalty: float = 0.2
    """Penalty per turn the agent could not use (unparseable turn, refused call)."""
    curiosity_weight: float = 0.1
    """Bonus for tool results the forward model did not predict; 0 = off (no forward model)."""
    curiosity_cap: float = 2.0
    """Cap of one call's group-normalised prediction error (a surprise of 1 is the group's mean)."""
    curiosity_gate: float = 1.0
    """Curiosity is paid only while the group's tool-call rate (share of trajectories that execute
    a call) is below this: it props tool use up when it falls and cannot buy tool spam."""
    curiosity_lr: float = 1e-3
    """Learning rate of the forward model, trained online on every executed call."""
    coherence_weight: float = 0.2
    """Bonus for adjacent steps that agree (acts on what the previous step returned or named, no
    repeated call, the thought names the operation); 0 = off."""
    efficiency_penalty: float = 0.05
    """Penalty per executed call beyond the first."""
    tool_bonus: float = 0.1
    """Bonus for using a tool, paid only when the answer is correct."""
    collapse_window: int = 5
    """Steps averaged for the collapse watch; the first window is the SFT policy's reference."""
    seed: int = 0
    """Seed of the prompt order, the sampling and the forward model."""
    threads: int = 2
    """torch intra-op threads per process."""
    dtype: str = "float32"
    """Weights' dtype: ``float32`` or ``bfloat16`` (an 8B model with LoRA)."""
    mixed_precision: str = "no"
    """accelerate's mixed precision: ``no``, ``bf16`` or ``fp16``."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (8B)."""
    lora_r: int = 0
    """Rank of a fresh LoRA adapter for the update (the reference is the adapter-disabled model);
    0 = every backbone weight trains (a frozen copy is the reference). Unused with ``adapter``."""
    lora_alpha: int = 16
    """LoRA scaling numerator."""
    logging_steps: int = 1
    """Steps between rows of ``log.csv`` / ``log.jsonl``."""
    save_steps: int = 20
    """Steps between checkpoints (0 = only the final model)."""

    def __post_init__(self) -> None:
        check_ranges(self, at_least_one=("max_steps", "groups_per_step", "num_iterations", "threads",
                                         "max_steps_per_episode", "max_new_tokens", "logging_steps", "collapse_window"),
                     non_negative=("start_episode", "warmup_steps", "save_steps", "lora_r", "seed", "weight_decay",
                                   "max_grad_norm", "beta", "epsilon", "epsilon_high", "pointer_weight",
                                   "correctness_weight", "acting_weight", "invalid_penalty", "curiosity_weight",
                                   "curiosity_cap", "curiosity_gate", "coherence_weight", "efficiency_penalty",
                                   "tool_bonus"),
                     positive=("lr", "heads_lr", "curiosity_lr", "temperature", "pointer_temperature"))
        if self.num_generations < 2:
            raise ConfigError(f"num_generations must be >= 2 (advantages compare a group), got {self.num_generations}")
        check_choice(self, "mixed_precision", ("no", "bf16", "fp16"))
        check_choice(self, "dtype", ("float32", "bfloat16"))
        if self.dtype == "bfloat16" and self.lora_r == 0 and not self.adapter:
            raise ConfigError("dtype bfloat16 with lora_r 0 trains every weight in bf16; use LoRA or float32")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
