"""The ONNX runtime's prompt processor when torchvision is not installed (a slim robot install).

transformers' Qwen-VL processors refuse to exist without a video processor, and the video
processor needs torchvision, i.e. torch: an ONNX-only robot would have to install torch just to
tokenize a prompt. Images need nothing of the kind: Qwen's PIL image processor (numpy + Pillow)
gives the same grid and pixel values within one 8-bit step of the torchvision one. This class
does what the processor's ``__call__`` does for text + images — render the chat template, expand
each image placeholder to one token per merged patch, tokenize — and nothing else (no video).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pixelis_ros.policy.base import PolicyError

IMAGE_TOKEN = "<|image_pad|>"


def load_processor(folder: Path):
    """transformers' own processor where it can be built (torchvision present), else ``SlimProcessor``."""
    import importlib.util
    import os

    if importlib.util.find_spec("torch") is None:
        # without torch transformers advises installing it on import; the ONNX runtime means it
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if importlib.util.find_spec("torchvision") is not None:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(folder, local_files_only=True)
    return SlimProcessor(folder)


class SlimProcessor:
    """Tokenizer + PIL image processor with the Qwen-VL processor's text/image interface."""

    def __init__(self, folder: Path):
        from transformers import AutoImageProcessor, AutoTokenizer

        folder = Path(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.image_processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True, backend="pil")
        self.chat_template = self.tokenizer.chat_template
        # where transformers' processors look for the template first: .jinja, then .json (Qwen3-VL)
        if (folder / "chat_template.jinja").is_file():
            self.chat_template = (folder / "chat_template.jinja").read_text()
        elif (folder / "chat_template.json").is_file():
            try:
                self.chat_template = str(json.loads((folder / "chat_template.json").read_text())["chat_template"])
            except (ValueError, KeyError, TypeError) as e:
                raise PolicyError(f"{folder / 'chat_template.json'} is not a chat template file "
                                  f"({type(e).__name__}); copy the checkpoint's own file back") from None

    def apply_chat_template(self, messages: list[dict], chat_template: str | None = None,
                            add_generation_prompt: bool = False, tokenize: bool = False):
        return self.tokenizer.apply_chat_template(messages, chat_template=chat_template or self.chat_template,
                                                  tokenize=tokenize, add_generation_prompt=add_generation_prompt)

    def __call__(self, text: list[str], images: list[np.ndarray] | None = None, return_tensors: str = "np",
                 input_data_format=None) -> dict:
        out: dict = {}
        if images:
            pixels = self.image_processor(images=images, return_tensors="np", input_data_format=input_data_format)
            out = {"pixel_values": np.asarray(pixels["pixel_values"]), "image_grid_thw": np.asarray(pixels["image_grid_thw"])}
            merge = self.image_processor.merge_size ** 2
            counts = [int(np.prod(g)) // merge for g in out["image_grid_thw"]]
            text = [self._expand(t, counts) for t in text]
        enc = self.tokenizer(text, return_tensors=return_tensors)
        return {**{k: np.asarray(v) for k, v in enc.items()}, **out}

    @staticmethod
    def _expand(text: str, counts: list[int]) -> str:
        """Each ``<|image_pad|>`` in order becomes as many as its image has merged patches."""
        parts = text.split(IMAGE_TOKEN)
        if len(parts) - 1 != len(counts):
            raise PolicyError(f"the prompt shows {len(parts) - 1} image(s) but {len(counts)} were given")
        return parts[0] + "".join(IMAGE_TOKEN * n + rest for n, rest in zip(counts, parts[1:]))
