"""The torch side of test-time RL: a LoRA adapter that learns, its EMA anchor, and the probe KL.

The learner owns an ``HFPolicy`` of the served model with two peft adapters on the language
model: ``ttrl`` (trained; starts at zero, i.e. the base model exactly) and ``ema`` (frozen; the
anchor). The heads stay frozen: the pointer's chosen cell is part of the loss (as in CC-RFT), so
its gradient reaches the LoRA weights through the hidden states the pointer reads, and the whole
test-time state is the adapter — what reaches the ONNX Runtime policy as one adapter file.

An update is CC-RFT's GRPO step (``training.rft_loss``) with every exemplar's advantage at 1:
the clipped ratio stops pushing a token once its probability rose by ``epsilon_high`` — a trust
region inside each update — and the k3 KL to the EMA adapter's log-probabilities is weighted by
``beta``. The optimizer is a fresh Adam per update (no optimizer state to restore after a
rejection, none to save). KL for the corridor is exact, not sampled: the full next-token and
pointer distributions of the adapter and the anchor compared at every generated position of the
probe set. The base model's and the EMA's log-probabilities on the probe are cached (the base
never changes; the EMA only after accepted updates).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from pixelis_ros.training.rft_loss import PolicyLogProbs, chunk_loss, collate_turns, token_count, turn_sequence
from pixelis_ros.training.rft_rollout import TurnRecord

TRAINED, ANCHOR = "ttrl", "ema"
FORWARD_BATCH = 8


@dataclass(frozen=True)
class _LossConfig:
    """The fields ``rft_loss.chunk_loss`` reads."""

    beta: float
    pointer_weight: float
    epsilon: float = 0.2
    epsilon_high: float = 0.28


class Learner:
    def __init__(self, policy, config):
        """``policy``: an HFPolicy with heads (refine mode); adapters are added here."""
        self.policy, self.config = policy, config
        policy.add_adapter(TRAINED, r=config.lora_r, alpha=config.lora_alpha)
        policy.add_adapter(ANCHOR, r=config.lora_r, alpha=config.lora_alpha)
        policy.set_adapter(TRAINED)
        if policy.heads is not None:
            policy.heads.requires_grad_(False)
        self.params = {TRAINED: self._named(TRAINED), ANCHOR: self._named(ANCHOR)}
        self.probe: list[TurnRecord] = []
        self._probe_cache: dict[str, list] = {}
        self.load_state(self.state(TRAINED), ANCHOR)  # both start equal (lora_B = 0: the base model)
        for p in self.params[ANCHOR].values():
            p.requires_grad_(False)
        self.loss_config = _LossConfig(config.beta, config.pointer_weight)
        self.model = PolicyLogProbs(policy.model, policy.heads, config.temperature, config.pointer_temperature)
        self.pad_id = policy.tokenizer.pad_token_id if policy.tokenizer.pad_token_id is not None else policy.pad_id

    def _named(self, adapter: str) -> dict[str, torch.nn.Parameter]:
        marker = f".{adapter}."
        return {name.replace(marker, "."): p for name, p in self.policy.model.named_parameters() if marker in name}

    # --- adapter state ----------------------------------------------------------------------------
    def state(self, adapter: str = TRAINED) -> dict[str, torch.Tensor]:
        """A copy of an adapter's weights, keyed by peft's parameter names without the adapter name."""
        return {k: p.detach().clone() for k, p in self.params[adapter].items()}

    def load_state(self, state: dict[str, torch.Tensor], adapter: str = TRAINED) -> None:
        params = self.params[adapter]
        if set(state) != set(params) or any(state[k].shape != params[k].shape for k in params):
            raise ValueError(f"adapter state does not fit this model's {adapter!r} adapter (rank or targets differ)")
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state[k])
        self._probe_cache.pop(adapter, None)

    def ema_step(self) -> None:
        decay = self.config.ema_decay
        with torch.no_grad():
            for k, p in self.params[ANCHOR].items():
                p.mul_(decay).add_(self.params[TRAINED][k], alpha=1 - decay)
        self._probe_cache.pop(ANCHOR, None)

    # --- the update ---------------------------------------------------------------------------------
    def update(self, turns: list[TurnRecord], scale: float) -> dict:
        """``steps_per_update`` Adam steps toward ``turns`` at ``lr * scale``; returns the loss."""
        c = self.config
        seqs = [turn_sequence(self.policy, t, 1.0) for t in turns if t.token_ids]
        if not seqs:
            return {"loss": None, "sequences": 0}
        params = list(self.params[TRAINED].values())
        optimizer = torch.optim.Adam(params, lr=c.lr * scale)
        count = token_count(seqs, c.pointer_weight)
        chunks = [seqs[i:i + FORWARD_BATCH] for i in range(0, len(seqs), FORWARD_BATCH)]
        olds: dict[int, tuple] = {}
        loss_value = 0.0
        self.model.train()
        for step in range(c.steps_per_update):
            for j, chunk in enumerate(chunks):
                batch = collate_turns(chunk, self.pad_id)
                tokens, pointers, _ = self.model(batch, chunk)
                if step == 0:
                    old = ([t.detach() for t in tokens], [p if p is None else p.detach() for p in pointers])
                    ref = None
                    if c.beta:
                        with torch.no_grad():
                            self.policy.set_adapter(ANCHOR)
                            ref = self.model(batch, chunk)[:2]
                            self.policy.set_adapter(TRAINED)
                    olds[j] = (old, ref)
                total, _ = chunk_loss(chunk, (tokens, pointers), *olds[j], self.loss_config)
                (total / count).backward()
                loss_value += float(total.detach()) / count / c.steps_per_update
            if c.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        self.policy.set_adapter(TRAINED)  # peft's set_adapter re-enables grads on the active adapter only
        for p in self.params[ANCHOR].values():
            p.requires_grad_(False)
        return {"loss": round(loss_value, 5), "sequences": len(seqs)}

    # --- the probe ------------------------------------------------------------------------------------
    def set_probe(self, turns: list[TurnRecord]) -> None:
        """Replace the probe set (a restored state's)."""
        self.probe = list(turns)
        self._probe_cache.clear()

    def add_probe(self, turns: list[TurnRecord]) -> None:
        """Fill the fixed probe set with the first turns the worker sees (never replaced after)."""
        room = self.config.probe_size - len(self.probe)
        if room > 0:
            self.probe.extend(t for t in turns[:room] if t.token_ids)
            self._probe_cache.clear()

    def _distributions(self, adapter: str | None) -> list:
        """Per probe turn: (log-softmax over the vocabulary at each generated position, pointer log-softmax or None)."""
        key = adapter or "base"
        if key in self._probe_cache:
            return self._probe_cache[key]
        out = []
        with torch.no_grad():
            context = self.policy.model.disable_adapter() if adapter is None else contextlib.nullcontext()
            if adapter is not None:
                self.policy.set_adapter(adapter)
            with context:
                for i in range(0, len(self.probe), FORWARD_BATCH):
                    seqs = [turn_sequence(self.policy, t, 0.0) for t in self.probe[i:i + FORWARD_BATCH]]
                    out.extend(self._forward_distributions(seqs))
            self.policy.set_adapter(TRAINED)
        if key != TRAINED:  # the trained adapter changes with every update; the others are cached
            self._probe_cache[key] = out
        return out

    def _forward_distributions(self, seqs) -> list:
        batch = collate_turns(seqs, self.pad_id)
        need_pointer = self.policy.heads is not None and any(s.pointer is not None for s in seqs)
        result = self.policy.model(**batch, output_hidden_states=need_pointer)
        out = []
        for i, s in enumerate(seqs):
            logits = result.logits[i, s.prompt_len - 1:s.prompt_len - 1 + s.n_tokens].float() / self.config.temperature
            pointer = None
            if need_pointer and s.pointer is not None:
                keys, query, _ = s.pointer
                hidden = result.hidden_states[-1][i]
                ptr = self.policy.heads.pointer_logits(hidden[query][None].float(), hidden[keys][None].float())[0]
                pointer = torch.log_softmax(ptr / self.config.pointer_temperature, -1)
            out.append((torch.log_softmax(logits, -1), pointer))
        return out

    def kl(self, anchor: str | None) -> float:
        """Mean exact KL(trained || anchor) per probe position (tokens, and pointer choices weighted
        by ``pointer_weight``); ``anchor`` None is the base model. 0 while the probe set is empty."""
        if not self.probe:
            return 0.0
        total = positions = 0.0
        for (p_tok, p_ptr), (q_tok, q_ptr) in zip(self._distributions(TRAINED), self._distributions(anchor)):
            total += float((p_tok.exp() * (p_tok - q_tok)).sum())
            positions += p_tok.shape[0]
            if p_ptr is not None and q_ptr is not None and self.config.pointer_weight:
                total += self.config.pointer_weight * float((p_ptr.exp() * (p_ptr - q_ptr)).sum())
                positions += self.config.pointer_weight
        return max(0.0, total / positions) if positions else 0.0

