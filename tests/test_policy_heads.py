"""Auxiliary grounding heads: shapes, files, losses that learn, and check/refine in the torch policy."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pixelis_ros.cota import parse_turn  # noqa: E402
from pixelis_ros.policy.heads import (GroundingHeads, HeadsConfig, box_loss, giou, load_heads, point_loss,  # noqa: E402
                                      pointer_loss, save_heads, target_cell, time_loss)
from pixelis_ros.policy.hf import load_hf_policy  # noqa: E402
from pixelis_ros.policy.model_folder import ModelFolderError  # noqa: E402
from policy_helpers import HEIGHT, INTERNAL_BOX, MODEL_BOX, WIDTH, call_text, frame, memorise, messages  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_target_cell_and_giou():
    grid = torch.tensor([[3, 4], [3, 4]])
    assert target_cell(torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 1.0, 1.0]]), grid).tolist() == [0, 11]
    assert target_cell(torch.tensor([[0.99, 0.4]]), grid[:1]).tolist() == [7]
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert giou(a, a).item() == pytest.approx(1.0)
    assert giou(a, torch.tensor([[2.0, 0.0, 3.0, 1.0]])).item() == pytest.approx(-1 / 3)


def test_save_load_round_trip_and_mismatch(tmp_path):
    heads = GroundingHeads(HeadsConfig(hidden_size=64, proj_dim=32, mlp_dim=64)).eval()
    save_heads(heads, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"heads.safetensors", "heads_config.json"}
    loaded = load_heads(tmp_path, hidden_size=64)
    q, k, grid = torch.randn(2, 64), torch.randn(2, 12, 64), torch.tensor([[3, 4], [3, 4]])
    with torch.no_grad():
        a, b = heads(q, k, grid), loaded(q, k, grid)
    for key in ("pointer_logits", "box", "point", "time"):
        assert torch.equal(a[key], b[key])
    assert ((a["box"][:, 2:] > a["box"][:, :2]).all() and (a["time"][:, 0] <= a["time"][:, 1]).all())
    with pytest.raises(ModelFolderError, match=r"heads.safetensors was trained for hidden size 64 but the model has 128"):
        load_heads(tmp_path, hidden_size=128)
    with pytest.raises(ModelFolderError, match="heads.safetensors is missing"):
        load_heads(tmp_path / "none", hidden_size=64)
    config = json.loads((tmp_path / "heads_config.json").read_text())
    (tmp_path / "heads_config.json").write_text(json.dumps(config | {"proj_dim": 16}))
    with pytest.raises(ModelFolderError, match="does not match"):
        load_heads(tmp_path, hidden_size=64)


def test_losses_decrease_on_a_tiny_overfit():
    torch.manual_seed(0)
    b, rows, cols, hidden = 8, 4, 4, 48
    keys = torch.randn(b, rows * cols, hidden)
    query = torch.randn(b, hidden)
    grid = torch.tensor([[rows, cols]] * b)
    centre = torch.rand(b, 2) * 0.6 + 0.2
    size = torch.rand(b, 2) * 0.2 + 0.1
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    times = torch.sort(torch.rand(b, 2), dim=-1).values
    target = target_cell(boxes, grid)
    heads = GroundingHeads(HeadsConfig(hidden_size=hidden, proj_dim=32, mlp_dim=64))
    optim = torch.optim.Adam(heads.parameters(), lr=1e-2)

    def losses():
        out = heads(query, keys, grid, chosen=target)  # teacher-forced cell, as in SFT
        return {"pointer": pointer_loss(out["pointer_logits"], target), "box": box_loss(out["box"], boxes),
                "point": point_loss(out["point"], centre), "time": time_loss(out["time"], times)}

    first = {k: v.item() for k, v in losses().items()}
    for _ in range(60):
        loss = losses()
        optim.zero_grad()
        sum(loss.values()).backward()
        optim.step()
    last = {k: v.item() for k, v in losses().items()}
    for k in first:
        assert last[k] < 0.5 * first[k], (k, first[k], last[k])
    with torch.no_grad():
        assert (heads(query, keys, grid)["chosen"] == target).float().mean() >= 0.75  # the pointer learned


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_check_and_refine(trained, tmp_path, arch):
    folder = trained[arch]
    hidden = json.loads((folder / "config.json").read_text())["text_config"]["hidden_size"]
    torch.manual_seed(0)
    heads = GroundingHeads(HeadsConfig(hidden_size=hidden))
    save_heads(heads, tmp_path)
    msgs, images = messages(), {"frame:-1": frame()}

    check = load_hf_policy(folder, max_new_tokens=64, heads="check", heads_path=str(tmp_path), heads_min_iou=0.0)
    gen = check.generate(msgs, images)
    verdict = gen.heads
    assert verdict["mode"] == "check" and verdict["image"] == "frame:-1" and verdict["agree"] is True
    x1, y1, x2, y2 = verdict["box"]
    assert 0 <= verdict["cell"] < 16 and x1 < x2 and y1 < y2
    assert parse_turn(gen.text).call.arguments["bbox_2d"] == INTERNAL_BOX[arch]  # check never changes the call
    assert gen.raw_text == call_text(MODEL_BOX[arch])

    # The heads' box comes from the generation's own hidden states: recompute it with a plain forward pass.
    inputs, _, _ = check.prepare(msgs, images)
    prompt_len = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([gen.token_ids])], dim=1)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    mm = torch.cat([inputs["mm_token_type_ids"], torch.zeros(1, len(gen.token_ids), dtype=torch.long)], dim=1)
    with torch.no_grad():
        states = check.model(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm,
                             output_hidden_states=True, **extra).hidden_states[-1][0]
        position = gen.token_ids.index(check.tokenizer.convert_tokens_to_ids("<tool_call>"))
        image_states = states[:prompt_len][inputs["input_ids"][0] == check.model.config.image_token_id]
        _, gh, gw = inputs["image_grid_thw"][0].tolist()
        pred = heads(states[prompt_len + position][None], image_states[None], torch.tensor([[gh // 2, gw // 2]]))
    expected = [round(v * s, 1) for v, s in zip(pred["box"][0].tolist(), (WIDTH, HEIGHT, WIDTH, HEIGHT))]
    assert verdict["box"] == pytest.approx(expected, abs=0.2)

    strict = load_hf_policy(folder, max_new_tokens=64, heads="check", heads_path=str(tmp_path), heads_min_iou=1.01)
    assert strict.generate(msgs, images).heads["agree"] is False  # flagged

    save_heads(heads, folder)  # default location: next to the model
    refine = load_hf_policy(folder, max_new_tokens=64, heads="refine")
    gen = refine.generate(msgs, images)
    assert gen.heads["refined"] is True
    assert parse_turn(gen.text).call.arguments["bbox_2d"] == gen.heads["box"] == verdict["box"]
    assert gen.raw_text == call_text(MODEL_BOX[arch])  # the generated numbers stay for the trace

    # In an episode the refined call is what runs, and the trace keeps the model's own numbers.
    from pixelis_ros.agent import Agent, AgentLimits
    from pixelis_ros.cota import to_messages
    from pixelis_ros.frames import Frame, Frames
    from pixelis_ros.tools import Toolbox
    toolbox = Toolbox(enabled=["zoom"])
    memorise(refine, to_messages("what does the sign say?", [], toolbox.schemas()), images, call_text(MODEL_BOX[arch]))
    episode = Agent(refine, toolbox, AgentLimits(max_steps=1)).run("what does the sign say?", Frames([Frame(frame(), 0.0)]))
    step = episode.to_json()["steps"][0]
    assert step["raw_text"] == call_text(MODEL_BOX[arch]) and step["heads"]["refined"] is True
    assert step["call"]["arguments"]["bbox_2d"] == step["heads"]["box"] and "error" not in step["response"]

    save_heads(GroundingHeads(HeadsConfig(hidden_size=64)), tmp_path / "wrong")
    with pytest.raises(ModelFolderError, match="hidden size 64"):
        load_hf_policy(folder, heads="check", heads_path=str(tmp_path / "wrong"))


def test_numpy_heads_equal_torch_heads(tmp_path):
    from pixelis_ros.policy.heads_numpy import load_numpy_heads

    torch.manual_seed(0)
    heads = GroundingHeads(HeadsConfig(hidden_size=48, proj_dim=16, mlp_dim=32)).eval()
    save_heads(heads, tmp_path)
    ours = load_numpy_heads(tmp_path, hidden_size=48)
    for rows, cols in ((3, 4), (1, 5), (6, 6)):
        for _ in range(4):  # random states put the chosen cell anywhere, edges and corners included
            q, k = torch.randn(48), torch.randn(rows * cols, 48)
            with torch.no_grad():
                ref = heads(q[None], k[None], torch.tensor([[rows, cols]]))
            mine = ours(q.numpy(), k.numpy(), rows, cols)
            assert mine["chosen"] == int(ref["chosen"][0])
            for key in ("pointer_logits", "box", "point"):
                np.testing.assert_allclose(mine[key], ref[key][0].numpy(), atol=1e-5)
    with pytest.raises(ModelFolderError, match="hidden size 48 but the model has 64"):
        load_numpy_heads(tmp_path, hidden_size=64)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_onnx_heads_verdict_equals_torch(trained, tmp_path, arch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pixelis_ros.policy.export_onnx import export_onnx
    from pixelis_ros.policy.registry import load_policy

    folder = tmp_path / "model"
    shutil.copytree(trained[arch], folder)
    hidden = json.loads((folder / "config.json").read_text())["text_config"]["hidden_size"]
    torch.manual_seed(0)
    save_heads(GroundingHeads(HeadsConfig(hidden_size=hidden)), folder)
    manifest = export_onnx(folder, tmp_path / "onnx")  # the heads travel with the export
    assert manifest["heads"] and manifest["files"]["decoder"]["outputs"][-1] == manifest["text"]["hidden_output"]
    msgs, images = messages(), {"frame:-1": frame()}
    for mode, min_iou in (("check", 0.0), ("check", 1.01), ("refine", 0.5)):
        theirs = load_hf_policy(folder, max_new_tokens=64, heads=mode, heads_min_iou=min_iou).generate(msgs, images)
        ours = load_policy("onnx", tmp_path / "onnx", max_new_tokens=64, heads=mode,
                           heads_min_iou=min_iou).generate(msgs, images)
        assert ours.token_ids == theirs.token_ids and ours.raw_text == theirs.raw_text == call_text(MODEL_BOX[arch])
        a, b = ours.heads, theirs.heads
        assert (a["mode"], a["image"], a["cell"], a.get("agree"), a.get("refined")) == \
               (b["mode"], b["image"], b["cell"], b.get("agree"), b.get("refined"))
        assert a["box"] == pytest.approx(b["box"], abs=0.2) and a["point"] == pytest.approx(b["point"], abs=0.2)
        assert a["score"] == pytest.approx(b["score"], abs=1e-3)
        box = parse_turn(ours.text).call.arguments["bbox_2d"]
        assert box == pytest.approx(parse_turn(theirs.text).call.arguments["bbox_2d"], abs=0.2)
        assert box == (a["box"] if mode == "refine" else INTERNAL_BOX[arch])  # check never changes the call
