"""Tiny Qwen-VL folders for the export/runtime tests (temporary: the policy-hf builder replaces this)."""

from __future__ import annotations

from pathlib import Path

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>", "<tool_call>", "</tool_call>", "<think>", "</think>", "<answer>", "</answer>",
           "<tool_response>", "</tool_response>"]


def _tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ['<think>look</think><tool_call>{"name": "zoom", "arguments": {"bbox_2d": [1, 2, 3, 4]}}</tool_call>',
              "<answer>red square 12</answer> What is written on the sign? system user assistant"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIAL,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return fast


def build_tiny(arch: str, out: Path) -> Path:
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    import trl, importlib.resources as res

    tok = _tokenizer(out)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=dict(depth=2, hidden_size=32, intermediate_size=64,
                               num_heads=2, out_hidden_size=64, window_size=56, fullatt_block_indexes=[1]), **common)
        template = (Path(trl.__file__).parent / "chat_templates/qwen2_5_vl.jinja").read_text()
        ip = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=448 * 448)
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor
        proc = Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                                   chat_template=template)
    else:
        from transformers import Qwen3VLConfig, Qwen3VLProcessor
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
        text.update(head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
        cfg = Qwen3VLConfig(text_config=text, vision_config=dict(depth=2, hidden_size=32, intermediate_size=64,
                            num_heads=2, out_hidden_size=64, num_position_embeddings=64, deepstack_visual_indexes=[0]),
                            **common)
        template = (Path(trl.__file__).parent / "chat_templates/qwen3_vl.jinja").read_text()
        ip = Qwen2VLImageProcessor(min_pixels=64 * 64, max_pixels=448 * 448, patch_size=16)
        proc = Qwen3VLProcessor(image_processor=ip, tokenizer=tok, video_processor=Qwen3VLVideoProcessor(),
                                chat_template=template)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(cfg).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out
