"""Test helpers for the torch policy: a frame, messages, and a real way to make a tiny random model
write a known turn (a few optimizer steps memorise it; no mocking of the model or our code)."""

from __future__ import annotations

import numpy as np
import torch

from pixelis_ros.cota import to_messages

WIDTH, HEIGHT = 320, 240


def frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def messages(query: str = "what does the sign say?") -> list[dict]:
    return to_messages(query, [], [])  # no tool schemas: a short prompt keeps memorising fast


def memorise(policy, msgs: list[dict], images: dict, target: str, max_steps: int = 300) -> int:
    """Train ``policy.model`` until greedy decoding of ``msgs`` gives ``target`` then ``<|im_end|>``;
    returns the steps taken."""
    tok = policy.tokenizer
    inputs, _, _ = policy.prepare(msgs, images)
    target_ids = tok.encode(target, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    prompt_len = inputs["input_ids"].shape[1]
    extra = torch.tensor([target_ids])
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    if "mm_token_type_ids" in full:
        full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
    labels = full["input_ids"][0, prompt_len:]
    model = policy.model
    model.train()
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for step in range(max_steps):
        logits = model(**full).logits[0, prompt_len - 1:-1]
        if step % 5 == 0 and bool((logits.argmax(-1) == labels).all()):
            break
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    return step
