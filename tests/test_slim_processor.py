"""The ONNX runtime's torch-free prompt processor gives exactly the inputs of transformers' own
processor with Qwen's PIL image processor, on both architectures, several images per prompt and
crops only a few pixels high (the case the processor's layout guess gets wrong)."""

from __future__ import annotations

import numpy as np
import pytest

from pixelis_ros.policy.prompt import encode_prompt
from pixelis_ros.policy.slim_processor import SlimProcessor

pytest.importorskip("transformers")

MESSAGES = [
    {"role": "system", "content": [{"type": "text", "text": "You are a robot."}]},
    {"role": "user", "content": [{"type": "image", "image": "a"}, {"type": "text", "text": "what is left of the cup?"},
                                 {"type": "image", "image": "b"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "<answer>a box</answer>"}]},
    {"role": "user", "content": [{"type": "text", "text": "and now?"}, {"type": "image", "image": "c"}]},
]


def reference_processor(folder):
    from transformers import AutoImageProcessor, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    processor.image_processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, backend="pil")
    return processor


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_slim_processor_equals_transformers_processor(tiny_models, arch):
    folder = tiny_models[arch]
    rng = np.random.default_rng(0)
    images = {"a": rng.integers(0, 256, (123, 77, 3), dtype=np.uint8),
              "b": rng.integers(0, 256, (3, 300, 3), dtype=np.uint8),
              "c": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)}
    want = encode_prompt(reference_processor(folder), MESSAGES, images)
    got = encode_prompt(SlimProcessor(folder), MESSAGES, images)
    for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw"):
        assert got[key].shape == want[key].shape, key
        assert np.array_equal(got[key], want[key]), key
    assert len(got["image_grid_thw"]) == 3


def test_slim_processor_refuses_a_prompt_and_images_that_disagree(tiny_models):
    from pixelis_ros.policy.base import PolicyError

    processor = SlimProcessor(tiny_models["qwen2_5_vl"])
    text = processor.apply_chat_template(MESSAGES[:2], add_generation_prompt=True)
    with pytest.raises(PolicyError, match="shows 2 image"):
        processor(text=[text], images=[np.zeros((32, 32, 3), np.uint8)])
