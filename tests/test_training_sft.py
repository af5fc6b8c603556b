"""SFT end to end on tiny real models and a real simulator export: train -> resume -> evaluate,
the loss's masking and weights, the heads' losses, bad recipes and data, the 8B recipe's
``--check`` and a 2-process accelerate run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from pixelis_ros.policy.profile import PromptProfile  # noqa: E402
from pixelis_ros.training.config import ConfigError, load_config  # noqa: E402
from pixelis_ros.training.data import DatasetError, SFTExamples, collate  # noqa: E402
from pixelis_ros.training.losses import SFTModel, token_loss  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_export(tmp_path_factory) -> Path:
    from pixelis_ros.sim.export import export_suite
    from pixelis_ros.sim.suites import load_suite

    out = tmp_path_factory.mktemp("smoke_export")
    export_suite(load_suite("smoke"), out, workers=1)
    return out


@pytest.fixture(scope="session")
def sft_model(smoke_export, tmp_path_factory) -> Path:
    """A tiny qwen3_vl folder whose tokenizer was trained on the smoke export."""
    from pixelis_ros.policy.builder import build_model

    return Path(build_model("qwen3_vl", "tiny", tmp_path_factory.mktemp("sft_init") / "m", corpus=str(smoke_export))["out"])


def recipe(model, data, out, **extra) -> dict:
    return {"model": str(model), "data": str(data), "output_dir": str(out), "max_steps": 2, "batch_size": 3,
            "warmup_steps": 1, "logging_steps": 1, "save_steps": 2, "threads": 1, **extra}


def examples(sft_model, smoke_export, **weights):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(sft_model, local_files_only=True)
    return processor, SFTExamples(smoke_export, processor, "qwen3_vl", PromptProfile(system_prompt=False, first_frame=True),
                                  **weights)


def test_train_resume_and_evaluate(sft_model, smoke_export, tmp_path):
    from safetensors.torch import load_file

    from pixelis_ros.policy.registry import load_policy
    from pixelis_ros.sim.bench import run_bench
    from pixelis_ros.sim.suites import iter_tasks, load_suite
    from pixelis_ros.training.sft import train

    straight = tmp_path / "straight"
    train(load_config(None, recipe(sft_model, smoke_export, straight, max_steps=4)), progress=False)
    before, after = load_file(sft_model / "model.safetensors"), load_file(straight / "final" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, "training left most weights unchanged"

    # --resume from the straight run's checkpoint at step 2 (as if it had stopped there) replays
    # steps 3 and 4 exactly: the same data order, weights, optimizer and schedule.
    out4 = tmp_path / "resumed"
    out4.mkdir()
    shutil.copytree(straight / "checkpoint-2", out4 / "checkpoint-2")
    resumed = train(load_config(None, recipe(sft_model, smoke_export, out4, max_steps=4)), resume=True, progress=False)
    assert resumed["steps"] == 4
    log = [json.loads(line) for line in (out4 / "log.jsonl").read_text().splitlines()]
    reference = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 4]
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in reference[2:]], rel=1e-4)
    assert (out4 / "loss.png").is_file() and (out4 / "final" / "heads.safetensors").is_file()

    final = out4 / "final"
    assert json.loads((final / "pixelis_prompt.json").read_text()) == {"system_prompt": False, "first_frame": True,
                                                                       "heads": "refine"}
    policy = load_policy("torch", final)
    assert policy.heads is not None and policy.options.heads == "refine"
    result = run_bench(iter_tasks(load_suite("smoke"), 2), lambda task: policy)
    assert sum(f["episodes"] for f in result["families"].values()) == 2


def test_masked_tokens_have_zero_gradient(sft_model, smoke_export):
    from transformers import AutoModelForImageTextToText

    processor, data = examples(sft_model, smoke_export)
    model = AutoModelForImageTextToText.from_pretrained(sft_model, local_files_only=True)
    batch = collate([data[0], data[1]], processor.tokenizer.pad_token_id, 2)
    out = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                                         "mm_token_type_ids")})
    logits = out.logits.detach().requires_grad_(True)
    loss, count = token_loss(logits, batch["labels"], batch["weights"])
    loss.backward()
    grad = logits.grad[:, :-1].abs().sum(-1)  # the logit at t predicts token t + 1
    target = batch["labels"][:, 1:] != -100
    assert count == int(target.sum()) > 0
    assert float(grad[~target].max()) == 0.0, "a masked token contributed to the loss"
    assert bool((grad[target] > 0).all())
    # Prompt, tool responses and images are masked; the assistant turns are not.
    text = processor.tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != -100])
    assert "<tool_response>" not in text and "<tool_call>" in text and "<answer>" in text


def test_token_weight_scales_exactly_the_tokens_it_names(sft_model, smoke_export):
    processor, plain = examples(sft_model, smoke_export)
    _, weighted = examples(sft_model, smoke_export, name_weight=3.0)
    a, b = plain[0], weighted[0]
    assert torch.equal(a.labels, b.labels)
    named = b.weights == 3.0
    names = processor.tokenizer.decode(b.input_ids[named])
    assert names.replace(" ", "") == "zoomsegment"  # fine_detail: the two operation names, nothing else
    assert torch.equal(a.weights[~named], b.weights[~named])
    logits = torch.randn(1, len(a.input_ids), len(processor.tokenizer))
    la, n = token_loss(logits, a.labels[None], a.weights[None])
    lb, _ = token_loss(logits, b.labels[None], b.weights[None])
    ce = torch.nn.functional.cross_entropy(logits[0, :-1], a.labels[1:], ignore_index=-100, reduction="none")
    assert float(lb - la) == pytest.approx(float(2.0 * ce[named[1:]].sum() / n), rel=1e-5)


def test_head_losses_on_a_hand_made_example():
    from pixelis_ros.policy.heads import GroundingHeads, giou
    from pixelis_ros.policy.heads_numpy import HeadsConfig

    torch.manual_seed(0)
    heads = GroundingHeads(HeadsConfig(hidden_size=16))
    model = SFTModel(torch.nn.Identity(), heads)
    hidden = torch.randn(1, 20, 16)
    # One call: query at token 3; its image's 2x3 cells are tokens 10..15; box centre in cell (row 1, col 2).
    box = (0.70, 0.55, 0.95, 0.95)
    losses = model.head_losses(hidden, [(0, 3, 10, 2, 3, box, None, (0.2, 0.6))], giou_weight=1.0)
    logits = heads.pointer_logits(hidden[:, 3], hidden[:, 10:16])
    losses = {k: v.detach() for k, v in losses.items()}
    assert float(losses["pointer"]) == pytest.approx(float(-torch.log_softmax(logits, -1)[0, 5]), rel=1e-5)
    pred = heads(hidden[:, 3], hidden[:, 10:16], torch.tensor([[2, 3]]), chosen=torch.tensor([5]))
    target = torch.tensor([box])
    expected_box = (pred["box"] - target).abs().mean() + (1 - giou(pred["box"], target)).mean()
    assert float(losses["box"]) == pytest.approx(float(expected_box), rel=1e-5)
    assert float(losses["time"]) == pytest.approx(float((pred["time"] - torch.tensor([[0.2, 0.6]])).abs().mean()), rel=1e-5)
    assert "point" not in losses  # no call had a point
    # A point-only call anchors the pointer at the point.
    point_losses = model.head_losses(hidden, [(0, 3, 10, 2, 3, None, (0.1, 0.1), None)], giou_weight=1.0)
    assert set(point_losses) == {"pointer", "point"}
    assert float(point_losses["pointer"]) == pytest.approx(float(-torch.log_softmax(logits, -1)[0, 0]), rel=1e-5)


def test_bad_recipes_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="unknown field.*'lerning_rate'"):
        load_config(None, {"model": "m", "data": "d", "output_dir": "o", "lerning_rate": 1})
    with pytest.raises(ConfigError, match="batch_size must be int"):
        load_config(None, ["model=m", "data=d", "output_dir=o", "batch_size=eight"])
    with pytest.raises(ConfigError, match="missing required field.*'data'"):
        load_config(None, {"model": "m", "output_dir": "o"})
    with pytest.raises(ConfigError, match="max_steps must be >= 1"):
        load_config(None, {"model": "m", "data": "d", "output_dir": "o", "max_steps": 0})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="a recipe is a YAML mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="--set 'lr': use --set field=value"):
        load_config(None, ["lr"])


def test_bad_data_folders_name_the_file(sft_model, smoke_export, tmp_path):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(sft_model, local_files_only=True)

    def build(folder):
        return SFTExamples(folder, processor, "qwen3_vl", PromptProfile())

    with pytest.raises(DatasetError, match="no such data folder"):
        build(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="episodes.jsonl is missing"):
        build(tmp_path / "empty")
    lines = (smoke_export / "episodes.jsonl").read_text().splitlines()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "episodes.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(DatasetError, match=r"episodes.jsonl:2: not valid JSON"):
        build(broken)
    record = json.loads(lines[0])
    del record["messages"]
    (broken / "episodes.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(DatasetError, match=r"episodes.jsonl:1: record lacks field\(s\) \['messages'\]"):
        build(broken)
    (broken / "episodes.jsonl").write_text(lines[0] + "\n")  # its images are not in this folder
    with pytest.raises(DatasetError, match=r"images/fine_detail-\d+/0.jpg \(episode fine_detail-\d+\) is missing"):
        build(broken)[0]


def pixelis(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "pixelis_ros", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env=env)


def test_cli_bad_recipe_exits_2_with_one_error(tmp_path):
    run = pixelis("train", "sft", "--config", str(tmp_path / "none.yaml"), "--json")
    assert run.returncode == 2 and json.loads(run.stdout) == {"error": f"{tmp_path / 'none.yaml'}: no such recipe file"}
    run = pixelis("train", "sft", "--config", "training/configs/sft_tiny.yaml", "--set", "data=" + str(tmp_path),
                  "--set", "model=" + str(tmp_path), "--json")
    assert run.returncode == 2 and "config.json" in json.loads(run.stdout)["error"]


def write_qwen3_vl_8b_config(folder: Path) -> None:
    """Qwen3-VL-8B-Instruct's published sizes, no weights."""
    from transformers import Qwen3VLConfig

    text = dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                 "mrope_interleaved": True}, tie_word_embeddings=False)
    vision = dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, patch_size=16, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=4096, num_position_embeddings=2304,
                  deepstack_visual_indexes=[8, 16, 24], hidden_act="gelu_pytorch_tanh")
    Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=151655, video_token_id=151656,
                  vision_start_token_id=151652, vision_end_token_id=151653).save_pretrained(folder)


def test_8b_recipe_checks_without_weights(tmp_path):
    folder = tmp_path / "Qwen3-VL-8B-Instruct"
    write_qwen3_vl_8b_config(folder)
    run = pixelis("train", "sft", "--config", "training/configs/sft_qwen3_vl_8b.yaml", "--set", f"model={folder}",
                  "--check", "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["ok"] and report["config"]["lora_r"] == 32 and report["config"]["dtype"] == "bfloat16"
    assert 8.0e9 < report["model"]["parameters"] < 9.5e9 and report["model"]["hidden_size"] == 4096
    assert report["model"]["lora_modules"] == 36 * 7 and report["model"]["weights"].startswith("missing")
    assert report["accelerate"]["multi_gpu.yaml"]["distributed_type"] == "MULTI_GPU"
    assert report["heads"] is True
    # The same check refuses a folder of another architecture.
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    run = pixelis("train", "sft", "--config", "training/configs/sft_qwen3_vl_8b.yaml", "--set", f"model={folder}",
                  "--check", "--json")
    assert run.returncode == 2 and "model_type 'llama'" in json.loads(run.stdout)["error"]


def test_two_process_accelerate_run(sft_model, smoke_export, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    port = str(29500 + os.getpid() % 400)
    # accelerate launch needs mpirun for several CPU processes; torchrun starts them and the
    # Accelerator joins them over gloo, as it would under accelerate launch on GPUs.
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                          "-m", "pixelis_ros",
                          "train", "sft", "--config", "training/configs/sft_tiny.yaml",
                          *[f"--set={k}={v}" for k, v in recipe(sft_model, smoke_export, out).items()],
                          "--no-progress", "--json"], capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2
    assert (out / "final" / "model.safetensors").is_file()


def test_lora_run_saves_an_adapter_that_loads_on_the_base(sft_model, smoke_export, tmp_path):
    from safetensors.torch import load_file

    from pixelis_ros.policy.registry import load_policy
    from pixelis_ros.training.sft import train

    out = tmp_path / "lora"
    train(load_config(None, recipe(sft_model, smoke_export, out, lora_r=4, lora_alpha=8)), progress=False)
    final = out / "final"
    assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    tensors = load_file(final / "adapter_model.safetensors")
    assert tensors and all("lora_" in k for k in tensors)
    assert any(float(v.abs().sum()) > 0 for k, v in tensors.items() if "lora_B" in k)  # B starts at zero: it trained
    policy = load_policy("torch", sft_model, adapter=str(final))
    assert policy.active_adapter == "final" and policy.heads is not None  # heads and profile come with the adapter
    assert policy.profile.first_frame and not policy.profile.system_prompt
