"""Build a random-init Qwen2.5-VL / Qwen3-VL model folder offline (``pixelis model build``).

The folder is a Hugging Face checkpoint like a released one, so every consumer (the torch
backend, training, ONNX export) treats the bundled tiny model and a local 8B folder the same way::

    config.json generation_config.json model.safetensors      random weights (seeded)
    tokenizer.json tokenizer_config.json                       BPE trained on a CoTA corpus
    processor_config.json chat_template.jinja                  image/video processor, template
    README.md                                                  model card

The chat template is the one TRL ships for the architecture (byte-identical, so TRL recognises
the model family). The processor is assembled from explicit parts — image processor, video
processor, tokenizer, template — and saved with ``save_pretrained``: ``AutoProcessor`` then needs
no hub lookup to know the classes, and ``load_check`` proves it by loading the folder back with
``local_files_only`` before the build reports success.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from pixelis_ros.extras import MissingDependency, install_hint
from pixelis_ros.policy.corpus import corpus_texts
from pixelis_ros.policy.presets import MERGE_SIZE, ModelPreset, get_preset
from pixelis_ros.policy.tokenizer import COTA_TOKENS, SPECIAL_TOKENS, save_tokenizer, train_tokenizer

PROCESSOR_CLASSES = {"qwen2_5_vl": ("Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor"),
                     "qwen3_vl": ("Qwen3VLProcessor", "Qwen3VLVideoProcessor")}
"""Processor and video processor class of each architecture (the image processor is shared)."""


def trl_chat_template(arch: str) -> str:
    """The chat template TRL ships for ``arch`` (package data; TRL is not imported)."""
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(f"the model builder needs trl (its chat templates), which is not installed: {install_hint('trl')}")
    path = Path(list(spec.submodule_search_locations)[0]) / "chat_templates" / f"{arch}.jinja"
    if not path.is_file():
        raise RuntimeError(f"this trl has no chat template {path.name} (looked in {path.parent}); use trl>=1.16")
    return path.read_text(encoding="utf-8")


def make_processor(preset: ModelPreset, tokenizer):
    import transformers
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    processor_cls, video_cls = (getattr(transformers, n) for n in PROCESSOR_CLASSES[preset.arch])
    side = preset.token_pixels
    size = {"shortest_edge": side * side * 4, "longest_edge": preset.image_max_side ** 2}
    mean_std = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3)  # Qwen3-VL's values; fine for random init
    image = Qwen2VLImageProcessor(patch_size=preset.patch_size, merge_size=MERGE_SIZE, temporal_patch_size=2,
                                  size=size, **mean_std)
    video = video_cls(patch_size=preset.patch_size, merge_size=MERGE_SIZE, temporal_patch_size=2, size=size, **mean_std)
    return processor_cls(image_processor=image, tokenizer=tokenizer, video_processor=video,
                         chat_template=trl_chat_template(preset.arch))


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def model_card(preset: ModelPreset, parameters: int, vocab_size: int, corpus: str, seed: int) -> str:
    return f"""# pixelis {preset.arch} {preset.name} (random init)

Built offline by `pixelis model build --arch {preset.arch} --preset {preset.name}` (seed {seed}).
The weights are **random**: this folder is the starting point for SFT (`pixelis_ros/training`),
for tests and for export, not a trained model.

| | |
|---|---|
| architecture | `{preset.arch}` (transformers `AutoModelForImageTextToText`) |
| parameters | {parameters:,} |
| language model | hidden {preset.hidden_size}, {preset.num_layers} layers, {preset.num_heads} heads ({preset.num_kv_heads} kv), MLP {preset.intermediate_size}, mrope_section {list(preset.mrope_section)} |
| vision tower | hidden {preset.vision_hidden_size}, {preset.vision_depth} blocks, patch {preset.patch_size} px, {MERGE_SIZE}x{MERGE_SIZE} merge, images up to {preset.image_max_side}x{preset.image_max_side} px |
| tokenizer | byte-level BPE, {vocab_size} entries, digits split one by one, trained on {corpus} |
| chat template | TRL's `{preset.arch}.jinja` |

Coordinates in tool calls follow the backbone's convention (DESIGN §4.2):
{"absolute pixels of the resized input image" if preset.arch == "qwen2_5_vl" else "0-1000 relative to the image"};
the torch backend converts to and from the internal pixel convention.

Load offline:

```python
from transformers import AutoModelForImageTextToText, AutoProcessor
model = AutoModelForImageTextToText.from_pretrained(DIR, local_files_only=True)
processor = AutoProcessor.from_pretrained(DIR, local_files_only=True)
```

or as a policy: `pixelis_ros.policy.registry.load_policy("torch", DIR)`.
"""


def load_check(out: Path) -> None:
    """Load the folder back the way users will (offline); raise if anything is missing."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    AutoProcessor.from_pretrained(out, local_files_only=True)
    AutoModelForImageTextToText.from_pretrained(out, local_files_only=True)


def build_model(arch: str, preset: str, out: str | Path, corpus: str | Path | None = None, seed: int = 0,
                verify: bool = True) -> dict:
    """Build the folder ``out``; returns ``{"out", "arch", "preset", "parameters", "vocab_size", "seconds"}``."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI's stdout/stderr carry JSON and errors, not bars
    t0 = time.perf_counter()
    spec = get_preset(arch, preset)
    out = Path(out)
    from pixelis_ros.tools import Toolbox

    texts, corpus_desc = corpus_texts(corpus, seed=seed, schemas=Toolbox().schemas())
    save_tokenizer(train_tokenizer(texts, spec.vocab_size), out)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + COTA_TOKENS}
    vocab_size = len(tokenizer)
    # Embedding rows rounded up to a multiple of 64: aligned matmuls; the extra rows are never produced.
    config = spec.to_hf_config(-(-vocab_size // 64) * 64, token_ids)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = [token_ids["<|im_end|>"], token_ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = token_ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    model.save_pretrained(out, safe_serialization=True)
    make_processor(spec, tokenizer).save_pretrained(out)
    parameters = count_parameters(model)
    (out / "README.md").write_text(model_card(spec, parameters, vocab_size, corpus_desc, seed), encoding="utf-8")
    if verify:
        load_check(out)
    return {"out": str(out), "arch": arch, "preset": preset, "parameters": parameters, "vocab_size": vocab_size,
            "seconds": round(time.perf_counter() - t0, 2)}
