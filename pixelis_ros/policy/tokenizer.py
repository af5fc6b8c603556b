"""A Qwen-style byte-level BPE tokenizer trained offline with the ``tokenizers`` library.

Same pipeline as Qwen2/Qwen3 (NFC, Qwen's split regex, byte-level BPE) so the saved folder loads
as ``Qwen2Tokenizer`` like a released checkpoint. The regex's ``\\p{N}`` alternative isolates every
digit: numbers are tokenized digit by digit, as Qwen does (DESIGN §6). The chat/vision markers
are special tokens (dropped by ``skip_special_tokens``); the CoTA tags are single added tokens
that stay in decoded text, so generation can stop on one id and the pointer head can read the
hidden state at ``<tool_call>``.
"""

from __future__ import annotations

import json
from pathlib import Path

SPLIT_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
"""Qwen2's pre-tokenizer split (from transformers' ``tokenization_qwen2``)."""

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                  "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                  "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
"""Qwen's special tokens, in Qwen's order (ids 0.. here)."""

COTA_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>", "<answer>", "</answer>", "<tool_response>",
               "</tool_response>")
"""CoTA tags added as single, non-special tokens."""

REQUIRED_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>")
"""Tokens any checkpoint's tokenizer must have as single ids for the torch backend to work (the
released Qwen tokenizers have them; they lack ``<answer>``, which then stops on text)."""


def train_tokenizer(texts: list[str], vocab_size: int):
    """A ``tokenizers.Tokenizer`` trained on ``texts`` with at most ``vocab_size`` entries."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(COTA_TOKENS), special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in COTA_TOKENS])
    return tok


def save_tokenizer(tok, out: Path) -> None:
    """Write ``tokenizer.json`` and a ``tokenizer_config.json`` that loads it as ``Qwen2Tokenizer``."""
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "Qwen2Tokenizer", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
              "unk_token": None, "bos_token": None, "add_prefix_space": False, "errors": "replace",
              "model_max_length": 32768, "split_special_tokens": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def missing_tokens(tokenizer) -> list[str]:
    """Which of ``REQUIRED_TOKENS`` a transformers tokenizer lacks as single ids."""
    missing = []
    for token in REQUIRED_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != token:
            missing.append(token)
    return missing
