"""The torch backend on tiny real models of both architectures: loading, stopping, coordinates,
sampling with logprobs, LoRA round trips, and bad model folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from pixelis_ros.cota import Step, ToolCall, parse_turn, to_messages  # noqa: E402
from pixelis_ros.frames import Frame, Frames  # noqa: E402
from pixelis_ros.policy.base import Policy, PolicyError  # noqa: E402
from pixelis_ros.policy.coords import ResizeRule, geometry, messages_to_model, smart_resize  # noqa: E402
from pixelis_ros.policy.hf import load_hf_policy  # noqa: E402
from pixelis_ros.policy.model_folder import ModelFolderError  # noqa: E402
from pixelis_ros.policy.registry import load_policy  # noqa: E402
from pixelis_ros.tools import ToolContext, Toolbox  # noqa: E402
from policy_helpers import INTERNAL_BOX, MODEL_BOX, call_text, frame, messages  # noqa: E402

ARCHS = ("qwen2_5_vl", "qwen3_vl")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_stop_rule_on_token_ids(tiny_models):
    policy = load_hf_policy(tiny_models["qwen3_vl"])
    tok, rule = policy.tokenizer, policy.stop
    ids = tok.encode("abc</tool_call>def", add_special_tokens=False)
    k = rule.stop_index(ids)
    assert tok.decode(ids[:k]) == "abc</tool_call>" and rule.done(ids[:k]) and not rule.done(ids[:k - 1])
    # A stop string split over several tokens (as in released Qwen tokenizers) still stops.
    pieces = tok.encode("ok </", add_special_tokens=False) + tok.encode("answer", add_special_tokens=False) \
        + tok.encode(">", add_special_tokens=False) + tok.encode(" more", add_special_tokens=False)
    k = rule.stop_index(pieces)
    assert tok.decode(pieces[:k]) == "ok </answer>" and rule.done(pieces[:k]) and not rule.done(pieces[:k - 1])
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert rule.stop_index(tok.encode("x y", add_special_tokens=False) + [im_end, 5]) == 2
    assert rule.stop_index(tok.encode("no end here", add_special_tokens=False)) is None
    assert rule.cut("a</answer>b</tool_call>") == "a</answer>"


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_stops_at_the_end_tag(tiny_models, arch):
    policy = load_policy("torch", tiny_models[arch], max_new_tokens=12)
    assert isinstance(policy, Policy)
    lm_head = policy.model.get_output_embeddings()
    vocab = lm_head.weight.shape[0]
    msgs, images = messages(), {"frame:-1": frame()}
    for token, text, reason, n in [("</tool_call>", "</tool_call>", "stop", 1), ("</answer>", "</answer>", "stop", 1),
                                   ("<|im_end|>", "", "eos", 0), ("a", "a" * 12, "length", 12)]:
        bias = torch.zeros(vocab)
        bias[policy.tokenizer.convert_tokens_to_ids(token)] = 1e4  # this token wins every step
        lm_head.bias = torch.nn.Parameter(bias)
        gen = policy.generate(msgs, images)
        assert (gen.text, gen.finish_reason, len(gen.token_ids)) == (text, reason, n), token
    del lm_head.bias
    lm_head.register_parameter("bias", None)
    # Multi-token stop strings end real greedy generations at their first occurrence.
    free = load_hf_policy(tiny_models[arch], max_new_tokens=24, stop_strings=["\x01never"])
    full = free.generate(msgs, images)
    assert full.finish_reason == "length" and len(full.token_ids) == 24
    stop = free.tokenizer.decode(full.token_ids[2:5])
    cut = load_hf_policy(tiny_models[arch], max_new_tokens=24, stop_strings=[stop]).generate(msgs, images)
    assert cut.finish_reason == "stop" and cut.text == full.text[:full.text.find(stop) + len(stop)]


@pytest.mark.parametrize("arch", ARCHS)
def test_coordinates_round_trip(tiny_models, arch):
    policy = load_hf_policy(tiny_models[arch])
    images = {"frame:-1": frame(), "obs:0": frame(1)[:100, :200]}
    inputs, refs, geometries = policy.prepare(messages(), {"frame:-1": frame()})
    g = geometries["frame:-1"]
    if arch == "qwen2_5_vl":  # the processor's own resize, read from its grid
        t, gh, gw = inputs["image_grid_thw"][0].tolist()
        assert (g.model_width, g.model_height) == (gw * 14, gh * 14) == (112, 84)
    else:
        assert (g.model_width, g.model_height) == (1000, 1000)
    assert g.to_model(INTERNAL_BOX[arch]) == MODEL_BOX[arch]
    assert g.from_model(MODEL_BOX[arch]) == INTERNAL_BOX[arch]
    # Prompt direction: earlier calls and tool responses are shown in the model's convention.
    step = Step(think="zoom", call=ToolCall("zoom", {"bbox_2d": INTERNAL_BOX[arch], "image": "frame:-1"}),
                response=json.dumps({"bbox_2d": INTERNAL_BOX[arch], "size": [448, 336], "images": ["obs:0"]}))
    msgs = to_messages("q", [step], [], step_images=[["obs:0"]])
    shown = messages_to_model(msgs, policy.geometries(images), policy.convention)
    assistant = shown[2]["content"][0]["text"]
    assert parse_turn(assistant).call.arguments["bbox_2d"] == MODEL_BOX[arch]
    assert json.loads(shown[3]["content"][0]["text"].split("\n")[1])["bbox_2d"] == MODEL_BOX[arch]
    assert ("0-1000" in shown[0]["content"][0]["text"]) == (arch == "qwen3_vl")
    assert msgs[2]["content"][0]["text"] != assistant  # the input was not modified
    rule = ResizeRule(28, 3136, 12544)
    assert smart_resize(240, 320, 28, 3136, 12544) == (84, 112)
    assert geometry("qwen2_5_vl", 320, 240, rule).from_model([56, 42]) == [160.0, 120.0]


def test_generated_call_maps_back_to_pixels_in_one_place():
    from pixelis_ros.policy.coords import generated_call, with_call

    g = {"frame:-1": geometry("qwen2_5_vl", 320, 240, ResizeRule(28, 3136, 12544))}
    text = call_text(MODEL_BOX["qwen2_5_vl"])
    call, ref, arguments = generated_call(text, g)
    assert ref == "frame:-1" and arguments["bbox_2d"] == INTERNAL_BOX["qwen2_5_vl"]
    rewritten = with_call(text, call, arguments)
    assert rewritten.startswith("<think>zoom in</think>") and parse_turn(rewritten).call.arguments == arguments
    assert generated_call("<answer>red</answer>", g) is None


@pytest.mark.parametrize("arch", ARCHS)
def test_generated_call_is_converted_to_internal_pixels(trained, arch):
    policy = load_hf_policy(trained[arch], max_new_tokens=64)
    gen = policy.generate(messages(), {"frame:-1": frame()})
    assert gen.raw_text == call_text(MODEL_BOX[arch]) and gen.finish_reason == "stop"
    step = parse_turn(gen.text)
    assert step.error is None and step.call.arguments == {"bbox_2d": INTERNAL_BOX[arch], "image": "frame:-1"}
    # The tool executes the internal box on the real frame.
    result = Toolbox().run(step.call.name, step.call.arguments, ToolContext(frames=Frames([Frame(frame(), 0.0)])))
    assert result.error is None and result.data["bbox_2d"] == INTERNAL_BOX[arch]


def test_sampling_n_with_logprobs(tiny_models):
    policy = load_hf_policy(tiny_models["qwen3_vl"], max_new_tokens=8)
    msgs, images = messages(), {"frame:-1": frame()}
    torch.manual_seed(0)
    gens = policy.sample(msgs, images, n=4, temperature=0.7)
    assert len(gens) == 4 and len({tuple(g.token_ids) for g in gens}) > 1
    prompt_len = policy.prepare(msgs, images)[0]["input_ids"].shape[1]
    for g in gens:
        assert len(g.token_ids) == len(g.token_logprobs) > 0 and all(lp <= 0 for lp in g.token_logprobs)
        logits = policy.logits(msgs, images, g.token_ids)[prompt_len - 1:-1]
        expected = torch.log_softmax(logits / 0.7, -1).gather(-1, torch.tensor(g.token_ids)[:, None])[:, 0]
        assert torch.allclose(torch.tensor(g.token_logprobs), expected, atol=1e-4)
    with pytest.raises(PolicyError, match="temperature"):
        policy.sample(msgs, images, n=2, temperature=0)


def test_lora_save_load_switch_merge(tiny_models, tmp_path):
    msgs, images = messages(), {"frame:-1": frame()}
    policy = load_hf_policy(tiny_models["qwen2_5_vl"])
    base = policy.logits(msgs, images)
    torch.manual_seed(1)
    policy.add_adapter("one", init_lora_weights=False)  # random B: the adapter changes the output
    logits_a = policy.logits(msgs, images)
    torch.manual_seed(2)
    policy.add_adapter("two", init_lora_weights=False)
    logits_b = policy.logits(msgs, images)
    assert not torch.allclose(base, logits_a) and not torch.allclose(logits_a, logits_b)
    policy.save_adapter(tmp_path / "one", "one")
    policy.save_adapter(tmp_path / "two", "two")
    assert (tmp_path / "one" / "adapter_model.safetensors").is_file()

    other = load_hf_policy(tiny_models["qwen2_5_vl"], adapter=str(tmp_path / "one"))
    assert torch.equal(other.logits(msgs, images), logits_a)
    other.load_adapter(tmp_path / "two")
    assert other.adapters() == ["one", "two"] and torch.equal(other.logits(msgs, images), logits_b)
    other.set_adapter("one")
    assert torch.equal(other.logits(msgs, images), logits_a)
    other.set_adapter(None)
    assert torch.equal(other.logits(msgs, images), base)
    with pytest.raises(PolicyError, match="no adapter 'c'"):
        other.set_adapter("c")
    other.set_adapter("two")
    other.merge_adapter()
    assert other.adapters() == [] and torch.allclose(other.logits(msgs, images), logits_b, atol=1e-5)


# --- bad input ----------------------------------------------------------------------------------

def _copy(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*drop) if drop else None)
    return dst


@pytest.mark.parametrize("drop, message", [
    (("config.json",), "config.json is missing"),
    (("model.safetensors",), "model.safetensors is missing"),
    (("tokenizer.json",), "tokenizer.json is missing"),
    (("tokenizer_config.json",), "tokenizer_config.json is missing"),
    (("processor_config.json",), "preprocessor_config.json is missing"),
    (("chat_template.jinja",), "chat_template.jinja is missing"),
])
def test_missing_files_are_named(tiny_models, tmp_path, drop, message):
    folder = _copy(tiny_models["qwen3_vl"], tmp_path / "m", drop)
    with pytest.raises(ModelFolderError, match=message) as err:
        load_policy("torch", folder)
    assert str(folder) in str(err.value)


def test_bad_folders(tiny_models, tmp_path):
    with pytest.raises(ModelFolderError, match="does not exist"):
        load_hf_policy(tmp_path / "nowhere")
    llama = _copy(tiny_models["qwen3_vl"], tmp_path / "llama")
    (llama / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ModelFolderError, match="model_type 'llama' .*LlamaForCausalLM.*qwen3_vl"):
        load_hf_policy(llama)
    pickled = _copy(tiny_models["qwen3_vl"], tmp_path / "pickled", ("model.safetensors",))
    (pickled / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ModelFolderError, match="pickle weights .*pytorch_model.bin.*safetensors"):
        load_hf_policy(pickled)
    with pytest.raises(PolicyError, match="unknown option"):
        load_hf_policy(tiny_models["qwen3_vl"], temprature=0.5)
    with pytest.raises(PolicyError, match="heads 'maybe'"):
        load_hf_policy(tiny_models["qwen3_vl"], heads="maybe")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(ModelFolderError, match="adapter_model.bin is refused"):
        load_hf_policy(tiny_models["qwen3_vl"], adapter=str(adapter))
    policy = load_hf_policy(tiny_models["qwen3_vl"])
    with pytest.raises(PolicyError, match=r"image\(s\) \['obs:3'\]"):
        policy.generate(to_messages("q", [], [], images=["obs:3"]), {"frame:-1": frame()})


def test_tokenizer_without_special_tokens(tiny_models, tmp_path):
    folder = _copy(tiny_models["qwen2_5_vl"], tmp_path / "m")
    data = json.loads((folder / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|vision_start|>"]
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ModelFolderError, match=r"tokenizer.json lacks the special token\(s\) <\|vision_start\|>"):
        load_hf_policy(folder)


def test_thin_crops_are_read_channels_last(tiny_models):
    """A tool crop 3 px high must not be mistaken for a channels-first image by the processor."""
    import numpy as np
    from transformers import AutoProcessor

    from pixelis_ros.policy.prompt import encode_prompt

    processor = AutoProcessor.from_pretrained(tiny_models["qwen3_vl"], local_files_only=True)
    thin = np.random.default_rng(0).integers(0, 255, (3, 93, 3), dtype=np.uint8)
    messages = [{"role": "user", "content": [{"type": "image", "image": "obs:0"}, {"type": "text", "text": "q"}]}]
    enc = encode_prompt(processor, messages, {"obs:0": thin})
    t, h, w = enc["image_grid_thw"][0].tolist()
    assert w > h  # 93 px wide, 3 px high (resized), not 3 wide
