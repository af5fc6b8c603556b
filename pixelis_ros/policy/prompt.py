"""One turn's prompt, as every backend builds it: the agent's messages in the backbone's
coordinate convention, rendered by the folder's chat template, with the pixels of each image
placeholder handed to the processor in the order the template emits them.

The torch and ONNX backends share this so that they see byte-identical prompts (their greedy
parity is a test); only the tensor type differs (``"pt"`` or ``"np"``).
"""

from __future__ import annotations

import numpy as np

from pixelis_ros.policy.base import PolicyError
from pixelis_ros.policy.coords import Geometry, ResizeRule, convention, geometry, messages_to_model
from pixelis_ros.policy.profile import PromptProfile

CHANNELS_LAST = "channels_last"
"""Every image we hand a processor is H x W x C."""


def image_refs(messages: list[dict]) -> list[str]:
    """Every image placeholder, in the order the chat template emits them."""
    return [part.get("image") for msg in messages
            for part in (msg.get("content", []) if isinstance(msg.get("content"), list) else [])
            if isinstance(part, dict) and part.get("type") == "image"]


def geometries(arch: str, images: dict[str, np.ndarray], resize: ResizeRule) -> dict[str, Geometry]:
    return {ref: geometry(arch, int(img.shape[1]), int(img.shape[0]), resize) for ref, img in images.items()}


def encode_prompt(processor, messages: list[dict], images: dict[str, np.ndarray], return_tensors: str = "np"):
    """Processor inputs (input_ids, + pixel_values and image_grid_thw) for the next assistant turn
    of ``messages`` as they are (already in the model's convention)."""
    refs = image_refs(messages)
    unknown = [r for r in refs if r not in images]
    if unknown:
        raise PolicyError(f"the messages show image(s) {unknown} that are not in images ({sorted(images)})")
    # A folder whose template lives only in tokenizer_config.json (as checkpoints saved by older
    # transformers ship it) loads as a processor without a template: the tokenizer holds it.
    template = None if processor.chat_template is not None else getattr(processor.tokenizer, "chat_template", None)
    text = processor.apply_chat_template(messages, chat_template=template, add_generation_prompt=True, tokenize=False)
    pixels = [np.ascontiguousarray(np.asarray(images[r])[..., :3]) for r in refs]
    # channels_last always: the processor guesses the layout from the shape, and a crop 1, 3 or 4 px
    # high would be read as channels-first (wrong grid, wrong pixels)
    enc = processor(text=[text], images=pixels or None, return_tensors=return_tensors, input_data_format=CHANNELS_LAST)
    return {k: np.asarray(v) for k, v in enc.items()} if return_tensors == "np" else enc


def model_prompt(processor, arch: str, resize: ResizeRule, messages: list[dict], images: dict[str, np.ndarray],
                 return_tensors: str = "np", profile: PromptProfile = PromptProfile()):
    """``(inputs, image refs in order, geometries)`` for the agent's ``messages`` (internal pixels),
    shown as the model's prompt ``profile`` says."""
    geoms = geometries(arch, images, resize)
    model_messages = messages_to_model(profile.messages(messages), geoms, convention(arch))
    return encode_prompt(processor, model_messages, images, return_tensors), image_refs(model_messages), geoms
