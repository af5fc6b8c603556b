"""The offline tiny-model builder: presets, tokenizer, folder layout, offline loading, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pixelis_ros.cli import main  # noqa: E402
from pixelis_ros.policy.builder import build_model, trl_chat_template  # noqa: E402
from pixelis_ros.policy.corpus import CorpusError, corpus_texts  # noqa: E402
from pixelis_ros.policy.presets import PRESETS, PresetError, get_preset  # noqa: E402
from pixelis_ros.policy.tokenizer import COTA_TOKENS, SPECIAL_TOKENS, missing_tokens  # noqa: E402
from pixelis_ros.tools import Toolbox  # noqa: E402

ARCHS = ("qwen2_5_vl", "qwen3_vl")


def test_presets_are_consistent():
    for (arch, name), preset in PRESETS.items():
        assert sum(preset.mrope_section) * 2 == preset.head_dim
        assert preset.image_max_side % preset.token_pixels == 0
    small = get_preset("qwen3_vl", "small")
    assert (small.hidden_size, small.num_layers, small.vision_hidden_size, small.vision_depth, small.image_max_side) \
        == (256, 4, 128, 2, 224)  # the DESIGN §6 recipe
    with pytest.raises(PresetError, match="mrope_section"):
        replace(small, mrope_section=(8, 8, 8))
    with pytest.raises(PresetError, match="no preset 'huge'"):
        get_preset("qwen3_vl", "huge")
    with pytest.raises(PresetError, match="unknown architecture"):
        replace(small, arch="llama")


@pytest.mark.parametrize("arch", ARCHS)
def test_folder_loads_offline_and_runs(tiny_models, arch):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tiny_models[arch]
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "processor_config.json",
            "chat_template.jinja", "generation_config.json", "README.md"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    assert json.loads((out / "config.json").read_text())["model_type"] == arch
    assert (out / "chat_template.jinja").read_text() == trl_chat_template(arch)
    model = AutoModelForImageTextToText.from_pretrained(out, local_files_only=True)
    processor = AutoProcessor.from_pretrained(out, local_files_only=True)
    messages = [{"role": "user", "content": [{"type": "image", "image": "frame:-1"}, {"type": "text", "text": "what?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    image = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    grid = inputs["image_grid_thw"][0].tolist()
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == grid[1] * grid[2] // 4  # 2x2 patches merged per token
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[-1] == model.config.text_config.vocab_size and torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_has_qwen_tokens_and_splits_digits(tiny_models, arch):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models[arch], local_files_only=True)
    assert missing_tokens(tok) == []
    for token in SPECIAL_TOKENS + COTA_TOKENS:
        assert len(tok.encode(token, add_special_tokens=False)) == 1, token
    digits = tok.convert_ids_to_tokens(tok.encode("[1234, 567]", add_special_tokens=False))
    assert [t for t in digits if t.isdigit()] == list("1234567")
    trace = '<think>zoom in</think>\n<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": [10, 20, 300, 400]}}\n</tool_call>'
    ids = tok.encode(trace, add_special_tokens=False)
    assert tok.decode(ids) == trace
    assert len(ids) < len(trace) / 1.5  # merges learned from the CoTA corpus
    assert tok.decode(tok.encode("<|im_end|>x", add_special_tokens=False), skip_special_tokens=True) == "x"


def test_corpus_sources(tmp_path):
    texts, desc = corpus_texts(None, schemas=Toolbox().schemas())
    assert "grammar" in desc and any("<tool_call>" in t for t in texts) and any('"bbox_2d"' in t for t in texts)
    with pytest.raises(CorpusError, match="no corpus at"):
        corpus_texts(tmp_path / "nothing")
    (tmp_path / "episodes.jsonl").write_text("not json\n")
    with pytest.raises(CorpusError, match="episodes.jsonl:1 is not JSON"):
        corpus_texts(tmp_path)


def test_build_from_a_simulator_export(tmp_path):
    pytest.importorskip("mujoco")
    from pixelis_ros.sim.export import export_suite
    from pixelis_ros.sim.suites import load_suite
    from transformers import AutoTokenizer

    export_suite(load_suite("smoke"), tmp_path / "export", episodes=2, workers=1)
    record = json.loads((tmp_path / "export" / "episodes.jsonl").read_text().splitlines()[0])
    texts, desc = corpus_texts(tmp_path / "export")
    assert record["question"] in texts and "export" in desc
    summary = build_model("qwen2_5_vl", "tiny", tmp_path / "m", corpus=tmp_path / "export", verify=False)
    tok = AutoTokenizer.from_pretrained(summary["out"], local_files_only=True)
    assert summary["vocab_size"] == len(tok)
    question_ids = tok.encode(record["question"], add_special_tokens=False)
    assert tok.decode(question_ids) == record["question"] and len(question_ids) < len(record["question"]) / 2


def test_cli_build_json(tmp_path, capsys):
    assert main(["model", "build", "--arch", "qwen3_vl", "--preset", "tiny", "--out", str(tmp_path / "m"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"out", "arch", "preset", "parameters", "vocab_size"}
    assert (result["arch"], result["preset"], Path(result["out"])) == ("qwen3_vl", "tiny", tmp_path / "m")
    assert 300_000 < result["parameters"] < 3_000_000
    assert main(["model", "build", "--arch", "qwen3_vl", "--preset", "tiny", "--out", str(tmp_path / "m2"),
                 "--corpus", str(tmp_path / "missing"), "--json"]) == 2
    assert "no corpus at" in json.loads(capsys.readouterr().out)["error"]
