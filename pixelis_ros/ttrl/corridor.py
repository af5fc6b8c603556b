"""The KL-to-EMA corridor: which test-time updates stand, how large the next step is, when to roll back.

After every update the worker measures KL(policy || EMA) on a fixed probe set. Above ``kl_high``
the update is rejected (the caller restores the adapter it had) and the step shrinks; a run of
``low_patience`` accepted updates below ``kl_low`` lets the step grow. The EMA follows only
accepted updates, so the corridor is a band around a slow copy of the policy, not around the
policy itself.

The corridor bounds each step; it does not bound where a long run of steps ends (the EMA moves
too). That is the drift check's job: KL(policy || base model) on the same probe set above
``drift_limit`` rolls back to the newest snapshot whose drift was at most half the limit — the
base adapter when none was. This module is plain bookkeeping (no torch): the tests drive it with
numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class CorridorState:
    scale: float = 1.0
    """The learning rate's current multiplier."""
    quiet: int = 0
    """Accepted updates in a row below ``kl_low``."""
    accepted: int = 0
    rejected: int = 0
    rollbacks: int = 0


class Corridor:
    def __init__(self, config, state: CorridorState | None = None):
        self.config = config
        self.state = state or CorridorState()

    def judge(self, kl: float) -> bool:
        """Whether an update whose probe KL to the EMA is ``kl`` stands; adjusts the step either way."""
        c, s = self.config, self.state
        if not kl <= c.kl_high:  # NaN is outside too
            s.rejected += 1
            s.scale = max(c.min_scale, s.scale * c.shrink)
            s.quiet = 0
            return False
        s.accepted += 1
        s.quiet = s.quiet + 1 if kl < c.kl_low else 0
        if s.quiet >= c.low_patience:
            s.scale, s.quiet = min(c.max_scale, s.scale * c.grow), 0
        return True

    def drifted(self, drift: float) -> bool:
        """Whether the policy has moved too far from the base model (a rollback is due)."""
        return bool(self.config.drift_limit) and not drift <= self.config.drift_limit

    def rolled_back(self) -> None:
        self.state.rollbacks += 1
        self.state.scale = max(self.config.min_scale, self.state.scale * self.config.shrink)
        self.state.quiet = 0

    def to_json(self) -> dict:
        return asdict(self.state)
