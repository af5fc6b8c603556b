"""Test helpers for the torch policy: a frame, messages, and a real way to make a tiny random model
write a known turn (a few optimizer steps memorise it; no mocking of the model or our code)."""

from __future__ import annotations

import json

import numpy as np
import torch

from pixelis_ros.cota import to_messages

WIDTH, HEIGHT = 320, 240
# A box in each backbone's convention for a 320x240 frame, and the same box in internal pixels.
# qwen2_5_vl (tiny: <= 112x112 px): the frame is resized to 112x84, so x scales by 320/112, y by 240/84.
MODEL_BOX = {"qwen2_5_vl": [14, 21, 70, 63], "qwen3_vl": [100, 100, 500, 500]}
INTERNAL_BOX = {"qwen2_5_vl": [40.0, 60.0, 200.0, 180.0], "qwen3_vl": [32.0, 24.0, 160.0, 120.0]}


def call_text(box) -> str:
    return ('<think>zoom in</think>\n<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": %s, "image": "frame:-1"}}'
            '\n</tool_call>' % json.dumps(box))


def frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def messages(query: str = "what does the sign say?") -> list[dict]:
    return to_messages(query, [], [])  # no tool schemas: a short prompt keeps memorising fast


def memorise(policy, msgs: list[dict], images: dict, target: str | list[int], max_steps: int = 300) -> int:
    """Train ``policy.model`` until greedy decoding of ``msgs`` gives ``target`` (text, then
    ``<|im_end|>``; or exactly these token ids); returns the steps taken."""
    tok = policy.tokenizer
    inputs, _, _ = policy.prepare(msgs, images)
    if isinstance(target, str):
        target = tok.encode(target, add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    extra = torch.tensor([target])
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    full["attention_mask"] = torch.ones_like(full["input_ids"])
    if "mm_token_type_ids" in full:
        full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
    labels = extra[0]
    model = policy.model
    model.train()
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for step in range(max_steps):
        # logits of the target positions only: a 151,936-token vocabulary over the whole prompt would dominate
        logits = model(**full, logits_to_keep=len(target) + 1).logits[0, :-1]
        if bool((logits.argmax(-1) == labels).all()):
            break
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    return step
