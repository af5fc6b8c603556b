"""LoRA kept as ONNX Runtime adapters: parity with peft in the torch policy, swapping an updated
adapter in without re-export, and clear errors for adapters that do not fit the export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from pixelis_ros.cli import main  # noqa: E402
from pixelis_ros.policy.base import PolicyError  # noqa: E402
from pixelis_ros.policy.onnx_lora import ADAPTER_FILE, AdapterMismatch, write_ort_adapter  # noqa: E402
from pixelis_ros.policy.registry import load_policy  # noqa: E402

MESSAGES = [{"role": "system", "content": [{"type": "text", "text": "You can zoom."}]},
            {"role": "user", "content": [{"type": "image", "image": "frame:-1"}, {"type": "text", "text": "What is red?"}]}]
FRAMES = {"frame:-1": (np.random.default_rng(0).random((240, 320, 3)) * 255).astype(np.uint8)}
NEW = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_cli(capsys, *argv):
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def make_adapter(model_dir, out, r=4, alpha=8, seed=0):
    """A peft adapter with random (non-zero) B on every language-model projection, saved by HFPolicy."""
    torch.manual_seed(seed)
    policy = load_policy("torch", model_dir)
    policy.add_adapter("default", r=r, alpha=alpha, init_lora_weights=False)
    policy.save_adapter(out)
    return out


@pytest.fixture(scope="module")
def lora_exports(tiny_models, tmp_path_factory):
    """{arch: (model folder, adapter folder, ONNX folder exported with --lora adapters)}."""
    from pixelis_ros.policy.export_onnx import ExportConfig, export_onnx

    root = tmp_path_factory.mktemp("lora")
    out = {}
    for arch in ("qwen2_5_vl", "qwen3_vl"):
        adapter = make_adapter(tiny_models[arch], root / f"{arch}-adapter")
        export_onnx(tiny_models[arch], root / f"{arch}-onnx", ExportConfig(adapter=str(adapter), lora="adapters"))
        out[arch] = (tiny_models[arch], adapter, root / f"{arch}-onnx")
    return out


def same_turn(ours, theirs):
    assert ours.token_ids == theirs.token_ids
    assert ours.text == theirs.text and ours.finish_reason == theirs.finish_reason


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_adapter_active_and_inactive_equal_the_torch_policy(lora_exports, arch):
    model_dir, adapter, onnx_dir = lora_exports[arch]
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    lora = manifest["lora"]
    assert lora["mode"] == "adapters" and lora["rank"] == 4 and lora["alpha"] == 8 and lora["scaling"] == 2.0
    assert len(lora["targets"]) == 7 * manifest["text"]["num_layers"]  # q k v o gate up down per layer
    assert set(manifest["files"]["decoder"]["inputs"]) >= set(lora["inputs"])
    assert (onnx_dir / ADAPTER_FILE).is_file()

    ours = load_policy("onnx", onnx_dir, max_new_tokens=NEW)  # the exported adapter is active by default
    assert ours.active_adapter == "default"
    with_adapter = load_policy("torch", model_dir, max_new_tokens=NEW, adapter=str(adapter))
    same_turn(ours.generate(MESSAGES, FRAMES), with_adapter.generate(MESSAGES, FRAMES))

    ours.set_adapter(None)
    base = load_policy("torch", model_dir, max_new_tokens=NEW)
    same_turn(ours.generate(MESSAGES, FRAMES), base.generate(MESSAGES, FRAMES))

    # the adapter matters: with stops ignored, 16 tokens with and without it differ
    from pixelis_ros.policy.prompt import encode_prompt

    raw = load_policy("onnx", onnx_dir, max_new_tokens=NEW, ignore_stop=True)
    enc = encode_prompt(raw.processor, MESSAGES, FRAMES)
    tuned = raw.decode(enc)[0]
    raw.set_adapter(None)
    assert raw.decode(enc)[0] != tuned


def test_updated_adapter_swaps_in_without_reexport(lora_exports, tmp_path, capsys):
    model_dir, adapter, onnx_dir = lora_exports["qwen2_5_vl"]
    graph = onnx_dir / "decoder.onnx"
    before = (graph.stat().st_mtime_ns, graph.read_bytes())
    # a "test-time update": perturb every B, save with peft, and change alpha (scaling folds into b)
    torch.manual_seed(1)
    trainer = load_policy("torch", model_dir, adapter=str(adapter))
    with torch.no_grad():
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.add_(torch.randn_like(param) * 0.5)
    updated = trainer.save_adapter(tmp_path / "updated")
    config = json.loads((updated / "adapter_config.json").read_text())
    (updated / "adapter_config.json").write_text(json.dumps(config | {"lora_alpha": 16}))

    code, out = run_cli(capsys, "export", "adapter", "--onnx", str(onnx_dir), "--adapter", str(updated),
                        "--out", str(tmp_path / "step1.onnx_adapter"))
    assert code == 0 and out["rank"] == 4 and out["scaling"] == 4.0
    policy = load_policy("onnx", onnx_dir, max_new_tokens=NEW)
    assert policy.load_adapter(tmp_path / "step1.onnx_adapter") == "step1"
    reference = load_policy("torch", model_dir, max_new_tokens=NEW, adapter=str(updated))
    expected = reference.generate(MESSAGES, FRAMES)
    same_turn(policy.generate(MESSAGES, FRAMES), expected)
    assert policy.generate(MESSAGES, FRAMES).token_ids != load_policy("torch", model_dir, max_new_tokens=NEW,
                                                                     adapter=str(adapter)).generate(MESSAGES, FRAMES).token_ids
    # a peft folder is converted on load; switching back and forth needs no reload either
    assert policy.load_adapter(updated, name="peft") == "peft" and policy.adapters() == ["default", "peft", "step1"]
    same_turn(policy.generate(MESSAGES, FRAMES), expected)
    policy.set_adapter("default")
    same_turn(policy.generate(MESSAGES, FRAMES),
              load_policy("torch", model_dir, max_new_tokens=NEW, adapter=str(adapter)).generate(MESSAGES, FRAMES))
    # the option form, as the agent node would pass it
    same_turn(load_policy("onnx", onnx_dir, max_new_tokens=NEW, adapter=str(tmp_path / "step1.onnx_adapter"))
              .generate(MESSAGES, FRAMES), expected)
    assert (graph.stat().st_mtime_ns, graph.read_bytes()) == before  # nothing re-exported


def test_mismatched_adapters_name_the_file_and_the_fix(lora_exports, tiny_models, tmp_path, capsys):
    model_dir, _, onnx_dir = lora_exports["qwen2_5_vl"]
    policy = load_policy("onnx", onnx_dir)

    other_rank = make_adapter(model_dir, tmp_path / "rank8", r=8)
    with pytest.raises(AdapterMismatch, match=r"rank8/adapter_model.safetensors: rank 8, but .* rank 4") as err:
        policy.load_adapter(other_rank)
    assert "pixelis export onnx" in str(err.value) and "--lora adapters" in str(err.value)

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "qv")
    code, out = run_cli(capsys, "export", "adapter", "--onnx", str(onnx_dir), "--adapter", str(tmp_path / "qv"),
                        "--out", str(tmp_path / "qv.onnx_adapter"))
    assert code == 2 and "target modules differ" in out["error"] and "qv/adapter_model.safetensors" in out["error"]

    other_model = make_adapter(tiny_models["qwen3_vl"], tmp_path / "qwen3", r=4)  # same rank, other shapes
    with pytest.raises(AdapterMismatch, match="trained on a Qwen3VL"):
        policy.load_adapter(other_model)

    stale = tmp_path / "stale.onnx_adapter"  # right names and shapes, stamped for another export
    spec = policy.lora_spec
    write_ort_adapter({n: np.zeros(s, np.float32) for n, s in spec["inputs"].items()}, stale, spec["model_version"] ^ 1)
    with pytest.raises(AdapterMismatch, match=r"stale.onnx_adapter was converted for another export") as err:
        policy.load_adapter(stale)
    assert "pixelis export adapter --onnx" in str(err.value)
    assert policy.adapters() == ["default"] and policy.active_adapter == "default"  # failures change nothing

    with pytest.raises(PolicyError, match="no adapter 'nope'"):
        policy.set_adapter("nope")

    merged = tmp_path / "merged"  # a folder whose manifest says the LoRA was merged takes no adapters
    shutil.copytree(onnx_dir, merged)
    manifest = json.loads((merged / "manifest.json").read_text())
    (merged / "manifest.json").write_text(json.dumps(manifest | {"lora": {"mode": "merged"}}))
    with pytest.raises(AdapterMismatch, match="exported with LoRA 'merged'.*--lora adapters"):
        load_policy("onnx", merged).load_adapter(stale)

    code, out = run_cli(capsys, "export", "onnx", "--model", str(model_dir), "--out", str(tmp_path / "o"),
                        "--lora", "adapters")
    assert code == 2 and "--lora adapters needs --adapter" in out["error"]
