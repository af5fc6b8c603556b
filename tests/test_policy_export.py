"""ONNX export: the CLI, the manifest, grid inputs vs transformers, LoRA merge, and bad folders."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")

from onnx_exports import exported  # noqa: E402

from pixelis_ros.cli import main  # noqa: E402
from pixelis_ros.policy.onnx_folder import OnnxFolderError  # noqa: E402
from pixelis_ros.policy.onnx_inputs import VisionSpec, rope_positions, vision_inputs  # noqa: E402
from pixelis_ros.policy.registry import load_policy  # noqa: E402


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


def run_cli(capsys, *argv):
    code = main([*argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(out[-1])


def copy_export(root, tmp_path, arch="qwen2_5_vl"):
    _, onnx_dir = exported(root, arch, "tiny")
    dst = tmp_path / "onnx"
    shutil.copytree(onnx_dir, dst)
    return dst


def test_cli_export_writes_a_self_contained_folder(root, tmp_path, capsys):
    model, _ = exported(root, "qwen3_vl", "tiny")
    code, out = run_cli(capsys, "export", "onnx", "--model", str(model), "--out", str(tmp_path / "o"))
    assert code == 0 and out["arch"] == "qwen3_vl" and out["lora"] == "merged"
    names = {p.name for p in (tmp_path / "o").iterdir()}
    assert {"vision.onnx", "decoder.onnx", "manifest.json", "config.json", "tokenizer.json", "chat_template.jinja"} <= names
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["files"]["vision"]["outputs"] == ["image_embeds", "deepstack_embeds"]
    assert manifest["files"]["decoder"]["inputs"][:4] == ["input_ids", "image_embeds", "position_ids", "attention_mask"]
    assert manifest["text"]["deepstack_layers"] >= 1 and len(manifest["source"]["weights_sha256"]) == 64


@pytest.mark.parametrize("grid", [[[1, 8, 8]], [[1, 12, 20]], [[1, 36, 16], [1, 8, 4]]])
def test_grid_inputs_match_transformers(grid):
    from transformers import vision_utils as vu

    g = torch.tensor(grid)
    spec25 = VisionSpec("qwen2_5_vl", 2, 14, window_size=112)
    feeds = vision_inputs(np.zeros((int(g.prod(-1).sum()), 4), np.float32), np.array(grid), spec25)
    assert np.array_equal(feeds["rotary_pos_ids"], vu.get_vision_position_ids(g, 2).numpy())
    index, cu = vu.get_vision_window_index(g, spatial_merge_size=2, window_size=112, patch_size=14)
    assert np.array_equal(feeds["window_index"], index.numpy())
    lengths = np.bincount(feeds["window_segments"])
    assert np.array_equal(np.concatenate([[0], np.cumsum(lengths)]), cu.numpy())
    spec3 = VisionSpec("qwen3_vl", 2, 16, num_grid_per_side=8)
    feeds = vision_inputs(np.zeros((int(g.prod(-1).sum()), 4), np.float32), np.array(grid), spec3)
    idx, w = vu.get_vision_interpolation_indices_and_weights(g, num_grid_per_side=8, mode="bilinear",
                                                             align_corners=True, spatial_merge_size=2)
    table = np.random.default_rng(0).random((64, 3))
    np.testing.assert_allclose((table[feeds["interp_indices"]] * feeds["interp_weights"][..., None]).sum(1),
                               (table[idx.numpy()] * w.numpy()[..., None]).sum(1), atol=1e-6)


def test_rope_positions_match_get_rope_index(root):
    from transformers import AutoModelForImageTextToText

    from pixelis_ros.policy.prompt import encode_prompt

    model_dir, onnx_dir = exported(root, "qwen2_5_vl", "tiny")
    policy = load_policy("onnx", onnx_dir)
    messages = [{"role": "user", "content": [{"type": "image", "image": "a"}, {"type": "text", "text": "x"},
                                             {"type": "image", "image": "b"}]}]
    enc = encode_prompt(policy.processor, messages, {"a": np.zeros((112, 56, 3), np.uint8), "b": np.zeros((60, 90, 3), np.uint8)})
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    ref, delta = model.model.get_rope_index(torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["mm_token_type_ids"]),
                                            torch.from_numpy(enc["image_grid_thw"]))
    mine, my_delta = rope_positions(enc["input_ids"], model.config.image_token_id, enc["image_grid_thw"], 2)
    assert np.array_equal(mine, ref.numpy()) and my_delta == int(delta)


def test_lora_adapter_is_merged_before_export(root, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from pixelis_ros.policy.prompt import encode_prompt

    model_dir, _ = exported(root, "qwen2_5_vl", "tiny")
    base = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    code, out = run_cli(capsys, "export", "onnx", "--model", str(model_dir), "--out", str(tmp_path / "o"),
                        "--adapter", str(tmp_path / "adapter"))
    assert code == 0
    policy = load_policy("onnx", tmp_path / "o", max_new_tokens=16, ignore_stop=True)
    msgs = [{"role": "user", "content": [{"type": "image", "image": "f"}, {"type": "text", "text": "hi"}]}]
    enc = encode_prompt(policy.processor, msgs, {"f": np.full((112, 112, 3), 90, np.uint8)})
    merged = peft_model.merge_and_unload().eval()
    with torch.no_grad():
        ref = merged.generate(**{k: torch.from_numpy(v) for k, v in enc.items()}, max_new_tokens=16, min_new_tokens=16,
                              do_sample=False, eos_token_id=None)
    assert policy.decode(enc)[0] == ref[0, enc["input_ids"].shape[1]:].tolist()


def test_bad_model_and_adapter_folders_exit_2(root, tmp_path, capsys):
    code, out = run_cli(capsys, "export", "onnx", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert code == 2 and "does not exist" in out["error"]
    model_dir, _ = exported(root, "qwen2_5_vl", "tiny")
    code, out = run_cli(capsys, "export", "onnx", "--model", str(model_dir), "--out", str(tmp_path / "o"),
                        "--adapter", str(tmp_path))
    assert code == 2 and "adapter_config.json" in out["error"]


@pytest.mark.parametrize("breakage,needle", [
    ("no_manifest", "manifest.json is missing"),
    ("no_decoder", "decoder.onnx is missing"),
    ("no_tokenizer", "tokenizer.json is missing"),
    ("other_config", "config digest differs"),
    ("truncated", "bytes, the manifest recorded"),
    ("swapped_graph", "differ from the manifest"),
])
def test_bad_onnx_folders_name_the_file_and_the_fix(root, tmp_path, breakage, needle):
    folder = copy_export(root, tmp_path)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if breakage == "no_manifest":
        manifest_path.unlink()
    elif breakage == "no_decoder":
        (folder / "decoder.onnx").unlink()
    elif breakage == "no_tokenizer":
        (folder / "tokenizer.json").unlink()
    elif breakage == "other_config":
        _, other = exported(root, "qwen3_vl", "tiny")
        shutil.copy(other / "config.json", folder / "config.json")
    elif breakage == "truncated":
        data = (folder / "decoder.onnx").read_bytes()
        (folder / "decoder.onnx").write_bytes(data[: len(data) // 2])
    elif breakage == "swapped_graph":  # same size on record, wrong graph: the session's io names give it away
        shutil.copy(folder / "vision.onnx", folder / "decoder.onnx")
        manifest["files"]["decoder"]["bytes"] = (folder / "decoder.onnx").stat().st_size
        manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(OnnxFolderError, match=needle) as err:
        load_policy("onnx", folder)
    assert "pixelis export onnx" in str(err.value) or "pixelis export onnx" in str(err.value.__cause__ or "")


def test_trt_without_tensorrt_exits_2_with_a_clear_message(root, capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here; the engine build is tested in test_policy_onnx.py")
    except ImportError:
        pass
    _, onnx_dir = exported(root, "qwen2_5_vl", "tiny")
    code, out = run_cli(capsys, "export", "trt", "--onnx", str(onnx_dir), "--fp16")
    assert code == 2 and "TensorRT is not installed" in out["error"]
    from pixelis_ros.policy.tensorrt import TensorRTUnavailable

    with pytest.raises(TensorRTUnavailable):
        load_policy("tensorrt", onnx_dir)


def test_engine_cache_from_another_export_is_refused(root, tmp_path):
    from pixelis_ros.policy.onnx_folder import check_onnx_folder
    from pixelis_ros.policy.tensorrt import ENGINES, EngineMismatch, check_engine_record

    _, onnx_dir = exported(root, "qwen2_5_vl", "tiny")
    manifest = check_onnx_folder(onnx_dir)
    (tmp_path / ENGINES).write_text(json.dumps({"config_sha256": "0" * 64, "files": {}}))
    with pytest.raises(EngineMismatch, match=ENGINES):
        check_engine_record(tmp_path, manifest)
