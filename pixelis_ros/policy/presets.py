"""Named sizes for the offline tiny-model builder: ``tiny`` and ``small`` for each backbone.

A preset is a frozen dataclass; ``to_hf_config`` turns it into the transformers config of its
architecture once the tokenizer (and so the vocabulary and special token ids) is known. Values
come from DESIGN §6: ``small`` is the recipe that trained a pointer head on this CPU (hidden 256,
4 layers, vision 128x2, 224 px); ``tiny`` is the fastest thing that still runs the whole stack
(tests, export). Only sizes live here; the 8B baseline is a real checkpoint folder, not a preset.

Traps the presets encode (checked in ``__post_init__``): multimodal RoPE splits the rotary half
of each head into (time, height, width) sections, so ``mrope_section`` must sum to
``head_dim / 2``; Qwen3-VL's learned vision position table is a square grid
(``vision_position_grid ** 2`` entries) and its deepstack layers must exist in the vision tower.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHS = ("qwen2_5_vl", "qwen3_vl")
"""Backbone families the builder and the torch backend accept (``config.json`` ``model_type``)."""

PATCH_SIZE = {"qwen2_5_vl": 14, "qwen3_vl": 16}
"""Vision patch side in pixels per architecture (as in the released checkpoints)."""

MERGE_SIZE = 2
"""Patches merged per side into one language-model image token (2x2, as released)."""


class PresetError(ValueError):
    """Unknown architecture or preset, or a preset whose sizes do not fit together."""


@dataclass(frozen=True)
class ModelPreset:
    """Sizes of one tiny backbone. Every field maps onto the transformers config of ``arch``."""

    arch: str
    """Backbone family: ``qwen2_5_vl`` or ``qwen3_vl``."""
    name: str
    """Preset name (``tiny``, ``small``); written to the model card."""
    hidden_size: int
    """Language model width."""
    num_layers: int
    """Language model decoder layers."""
    num_heads: int
    """Attention heads of the language model."""
    num_kv_heads: int
    """Key/value heads (grouped-query attention); divides ``num_heads``."""
    intermediate_size: int
    """Width of the language model's SwiGLU MLP."""
    mrope_section: tuple[int, int, int]
    """Rotary dims for (time, height, width) positions; sums to ``head_dim / 2``."""
    vision_hidden_size: int
    """Vision tower width."""
    vision_depth: int
    """Vision tower blocks."""
    vision_heads: int
    """Vision tower attention heads."""
    vision_intermediate_size: int
    """Vision tower MLP width."""
    image_max_side: int
    """Images are resized to at most ``image_max_side ** 2`` pixels (aspect kept) by the processor."""
    vocab_size: int
    """Target size of the BPE vocabulary trained on the CoTA corpus (a small corpus may give fewer)."""
    max_position_embeddings: int = 8192
    """Longest sequence (prompt + images + generation) the RoPE tables are sized for."""
    rope_theta: float = 10000.0
    """RoPE base; short contexts need no large base."""
    vision_position_grid: int = 32
    """Qwen3-VL only: side of the learned vision position table (interpolated to any grid)."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise PresetError(f"unknown architecture {self.arch!r}; known: {', '.join(ARCHS)}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise PresetError(f"{self.arch}/{self.name}: hidden {self.hidden_size}, heads {self.num_heads} and "
                              f"kv heads {self.num_kv_heads} must divide evenly")
        if sum(self.mrope_section) * 2 != self.head_dim:
            raise PresetError(f"{self.arch}/{self.name}: mrope_section {list(self.mrope_section)} sums to "
                              f"{sum(self.mrope_section)}, must be head_dim/2 = {self.head_dim // 2}")
        if self.vision_hidden_size % self.vision_heads:
            raise PresetError(f"{self.arch}/{self.name}: vision hidden {self.vision_hidden_size} not divisible by "
                              f"{self.vision_heads} heads")
        if self.image_max_side % self.token_pixels:
            raise PresetError(f"{self.arch}/{self.name}: image_max_side {self.image_max_side} must be a multiple of "
                              f"{self.token_pixels} px (one image token)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_size(self) -> int:
        return PATCH_SIZE[self.arch]

    @property
    def token_pixels(self) -> int:
        """Side in pixels of the image area one language-model image token covers."""
        return self.patch_size * MERGE_SIZE

    def to_hf_config(self, vocab_size: int, token_ids: dict[str, int]):
        """The transformers config (``Qwen2_5_VLConfig`` / ``Qwen3VLConfig``) for a tokenizer of
        ``vocab_size`` entries whose special tokens have ``token_ids`` (keys are token strings)."""
        from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

        text = dict(vocab_size=vocab_size, hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
                    num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
                    num_key_value_heads=self.num_kv_heads, max_position_embeddings=self.max_position_embeddings,
                    pad_token_id=token_ids["<|endoftext|>"])
        vision = dict(depth=self.vision_depth, hidden_size=self.vision_hidden_size, num_heads=self.vision_heads,
                      intermediate_size=self.vision_intermediate_size, patch_size=self.patch_size,
                      spatial_merge_size=MERGE_SIZE, temporal_patch_size=2, out_hidden_size=self.hidden_size)
        ids = dict(image_token_id=token_ids["<|image_pad|>"], video_token_id=token_ids["<|video_pad|>"],
                   vision_start_token_id=token_ids["<|vision_start|>"], vision_end_token_id=token_ids["<|vision_end|>"])
        rope = {"rope_type": "default", "rope_theta": self.rope_theta, "mrope_section": list(self.mrope_section)}
        if self.arch == "qwen2_5_vl":
            text.update(rope_parameters=rope, bos_token_id=None, eos_token_id=token_ids["<|im_end|>"])
            # Window attention everywhere but the last block, as the released towers alternate.
            vision.update(window_size=self.token_pixels * 4, fullatt_block_indexes=[self.vision_depth - 1])
            return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        text.update(head_dim=self.head_dim, rope_parameters=rope | {"mrope_interleaved": True})
        vision.update(num_position_embeddings=self.vision_position_grid ** 2,
                      deepstack_visual_indexes=list(range(max(0, self.vision_depth - 1))) or [0],
                      hidden_act="gelu_pytorch_tanh")
        return Qwen3VLConfig(text_config=text, vision_config=vision, **ids)


def _presets() -> dict[tuple[str, str], ModelPreset]:
    out = {}
    for arch in ARCHS:
        # qwen2.5: (t, h, w) = 1/4, 3/8, 3/8 of the rotary half; qwen3 (interleaved): 3/8, 5/16, 5/16.
        tiny_sec, small_sec = ((4, 6, 6), (8, 12, 12)) if arch == "qwen2_5_vl" else ((6, 5, 5), (12, 10, 10))
        tiny_side = 14 * 2 * 4 if arch == "qwen2_5_vl" else 16 * 2 * 4  # 4x4 image tokens at most: fast tests
        out[(arch, "tiny")] = ModelPreset(
            arch=arch, name="tiny", hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=256,
            mrope_section=tiny_sec, vision_hidden_size=64, vision_depth=2, vision_heads=2, vision_intermediate_size=128,
            image_max_side=tiny_side, vocab_size=2048)
        out[(arch, "small")] = ModelPreset(
            arch=arch, name="small", hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=1024,
            mrope_section=small_sec, vision_hidden_size=128, vision_depth=2, vision_heads=2,
            vision_intermediate_size=512, image_max_side=224, vocab_size=8192)
    return out


PRESETS: dict[tuple[str, str], ModelPreset] = _presets()
"""Every (arch, preset name) the builder knows."""


def get_preset(arch: str, name: str) -> ModelPreset:
    if (arch, name) not in PRESETS:
        names = sorted({n for _, n in PRESETS})
        raise PresetError(f"no preset {name!r} for architecture {arch!r}; architectures: {', '.join(ARCHS)}; "
                          f"presets: {', '.join(names)}")
    return PRESETS[(arch, name)]
