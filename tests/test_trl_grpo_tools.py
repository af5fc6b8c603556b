"""What TRL's ``GRPOTrainer`` (trl 1.16, transformers generation path, no vLLM) does with images
returned by a tool, checked on the tiny random-init Qwen3-VL folder that ``build_model`` makes.

The TRL tracker (#5663, #6290, #6723) reports that image blocks in tool responses used to be
dropped or to crash the forward pass (image tokens vs image features). #5663's cause is the chat
template: it has to put image placeholders inside ``role="tool"`` messages. TRL's
``qwen3_vl.jinja``, which our builder ships unchanged, does that. So in trl 1.16 + transformers 5.24
the image does reach the model, and this module checks that it does:

Carried (asserted below):

* (a) Next turn's generation. ``_tool_call_loop`` collects the ``{"type": "image"}`` parts of a
  tool's list result. ``_get_tool_suffix_ids`` renders them as ``<|vision_start|>`` +
  ``<|image_pad|>`` * n + ``<|vision_end|>`` inside ``<tool_response>``, with n expanded for the
  image's size. The post-tool ``generate`` gets ``pixel_values``/``image_grid_thw`` for prompt
  image + tool image. The vision tower encodes the tool image's own pixels, and the image-token
  count matches the features.
* (b) Loss forward (under ``compute_loss``). ``pixel_values`` holds prompt image + tool image for
  every rollout, ``mm_token_type_ids`` marks the image tokens of the prompt *and* of the tool
  suffix, and the vision tower encodes them with grad on. Changing the tool image's pixels changes
  the log-probs of the tokens generated after the tool, so the image really conditions the loss.
* The tool-response tokens are in ``completion_ids`` but masked out of the loss (``tool_mask`` 0).

Not carried (structural facts this project depends on):

1. No place for an extra action log-probability. The loss inputs are token tensors (prompt and
   completion ids and masks, ``tool_mask``), the image tensors, per-rollout ``advantages`` and
   optional per-token logps shaped like ``completion_ids``. ``_compute_loss`` builds its
   log-probs only from the LM logits over ``completion_ids``. A per-rollout value outside the
   token sequence, such as the grounding head's sampled pointer cell log-prob, reaches the reward
   functions as a dataset column but never the loss. Adding it means overriding ``_compute_loss``
   (and ``_generate_and_score_completions`` to carry it).
2. The history is raw tokens. The next turn's input is exactly ``prompt_ids + <the model's
   completion tokens> + tool suffix``. Re-tokenization and editing never happen. A tool that
   executes a refined box can report that only as text inside ``<tool_response>``; the assistant
   turn the model sees, and the parsed ``tool_calls`` the reward sees, keep the generated box.

Also: TRL's ``qwen2_5_vl.jinja`` cannot render tools at all, so ``GRPOTrainer(tools=...)`` refuses
a qwen2_5_vl folder built by ``build_model``. A template that drops image parts of tool messages
(#5663's case) makes ``_get_tool_suffix_ids`` raise (0 ``<|image_pad|>`` tokens for 1 image). TRL
stops loudly; it does not train on while silently losing the image.

A random-init model never writes a valid tool call. So ``ScriptedTrainer`` lets TRL's real
``generate`` run every turn (on the real inputs, which is what is observed), then swaps the
sampled tokens for scripted ones: a ``zoom`` call in turn 1, ``red<|im_end|>`` after the tool.
Everything else is TRL's own code: tool parsing, tool execution, suffix tokenization,
multimodal batching, and one optimizer step.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("trl")

GENERATED_BOX = [100, 200, 300, 400]
REFINED_BOX = [105, 205, 305, 405]  # what the tool "executes" instead of the generated box
CALL_TEXT = '<tool_call>\n{"name": "zoom", "arguments": {"box": [100, 200, 300, 400]}}\n</tool_call><|im_end|>'
ANSWER_TEXT = "red<|im_end|>"
PROMPT_SIDE, TOOL_SIDE = 128, 64  # 8x8 / 4x4 patches of 16 px -> 16 / 4 image tokens after the 2x2 merge
MERGE = 4  # 2x2 patches per image token


def _pattern(side: int, seed: int):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def run(tiny_models, tmp_path_factory):
    """One real GRPO step with a scripted tool call; returns everything observed along the way."""
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    folder = tiny_models["qwen3_vl"]
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
    tok = processor.tokenizer
    call_ids = tok(CALL_TEXT, add_special_tokens=False)["input_ids"]
    answer_ids = tok(ANSWER_TEXT, add_special_tokens=False)["input_ids"]
    assert tok.decode(call_ids) == CALL_TEXT and tok.decode(answer_ids) == ANSWER_TEXT

    prompt_image, tool_image = _pattern(PROMPT_SIDE, 1), _pattern(TOOL_SIDE, 2)
    rec = {"executed": [], "reward_calls": [], "generate": [], "loss_inputs": [], "vision": [], "forward": [],
           "in_loss": False}

    def zoom(box: list[int]) -> list:
        """Zoom into a region of the image.

        Args:
            box: region [x1, y1, x2, y2] in 0-1000 coordinates.
        """
        rec["executed"].append({"generated": list(box), "executed": REFINED_BOX})
        return [{"type": "image", "image": tool_image}, {"type": "text", "text": f"zoomed {REFINED_BOX}"}]

    def reward(completions, **kwargs):
        rec["reward_calls"].append({"completions": completions, "kwargs": kwargs})
        return [float(i) for i in range(len(completions))]  # distinct rewards: non-zero advantages

    class ScriptedTrainer(GRPOTrainer):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations,
                                  has_tool_images=False):
            ids, logprobs = super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                          has_tool_images)
            rec["generate"].append({"prompt_ids": [list(p) for p in prompt_ids], "images": images,
                                    "fields": dict(multimodal_fields), "has_tool_images": has_tool_images})
            scripted = call_ids if len(rec["generate"]) == 1 else answer_ids
            return [list(scripted) for _ in ids], logprobs

        def _compute_loss(self, model, inputs):
            rec["loss_inputs"].append(dict(inputs))
            rec["in_loss"] = True
            try:
                return super()._compute_loss(model, inputs)
            finally:
                rec["in_loss"] = False

    def vision_hook(module, args, kwargs):
        rec["vision"].append({"in_loss": rec["in_loss"], "grad": torch.is_grad_enabled(),
                              "pixels": args[0].detach().clone(), "grid": kwargs["grid_thw"].tolist()})

    def forward_hook(module, args, kwargs):
        ids, mm = kwargs.get("input_ids"), kwargs.get("mm_token_type_ids")
        if ids is not None and ids.size(1) > 1:  # prefill and loss forwards, not decode steps
            rec["forward"].append({"in_loss": rec["in_loss"], "image_pads": (ids == image_pad).sum(1).tolist(),
                                   "mm_marked": None if mm is None else (mm == 1).sum(1).tolist()})

    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    model.model.visual.register_forward_pre_hook(vision_hook, with_kwargs=True)
    model.register_forward_pre_hook(forward_hook, with_kwargs=True)

    dataset = Dataset.from_list([{
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour?"}]}],
        "image": prompt_image,
        "pointer_logp": -1.25,  # stands for the grounding head's sampled-cell log-prob
    }])
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), use_cpu=True, bf16=False, report_to=[],
                      per_device_train_batch_size=2, num_generations=2, max_completion_length=96, max_steps=1,
                      logging_strategy="no", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                      seed=0)
    trainer = ScriptedTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                              processing_class=processor, tools=[zoom])
    trainer.train()
    rec.update(trainer=trainer, processor=processor, call_ids=call_ids, answer_ids=answer_ids,
               prompt_image=prompt_image, tool_image=tool_image, image_pad=image_pad)
    return rec


def _pixels(processor, image) -> torch.Tensor:
    return processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]


def test_tool_image_reaches_next_turn_generation(run):
    assert len(run["executed"]) == 2, "the scripted call was parsed and executed once per rollout"
    first, second = run["generate"][:2]
    assert len(run["generate"]) == 2  # call turn, then one post-tool turn (the answer has no call)
    assert not first["has_tool_images"] and second["has_tool_images"]
    # the post-tool generate is given prompt image + tool image for each rollout
    assert [[im.size for im in ims] for ims in second["images"]] == [[(PROMPT_SIDE,) * 2, (TOOL_SIDE,) * 2]] * 2
    assert second["images"][0][1] is run["tool_image"]
    grid_prompt, grid_tool = [1, PROMPT_SIDE // 16, PROMPT_SIDE // 16], [1, TOOL_SIDE // 16, TOOL_SIDE // 16]
    assert second["fields"]["image_grid_thw"].tolist() == [grid_prompt, grid_tool] * 2

    # the vision tower really encodes the tool image's pixels while generating turn 2
    gen_vision = [v for v in run["vision"] if not v["grad"]]
    assert [v["grid"] for v in gen_vision] == [[grid_prompt] * 2, [grid_prompt, grid_tool] * 2]
    n_prompt, n_tool = PROMPT_SIDE * PROMPT_SIDE // 256, TOOL_SIDE * TOOL_SIDE // 256
    tool_px = _pixels(run["processor"], run["tool_image"])
    turn2 = gen_vision[1]["pixels"]
    assert torch.equal(turn2[n_prompt:n_prompt + n_tool], tool_px)
    assert torch.equal(turn2[2 * n_prompt + n_tool:], tool_px)

    # ... and the turn-2 input ids hold one placeholder per image token, all marked as image tokens
    tokens = (n_prompt + n_tool) // MERGE
    prefills = [f for f in run["forward"] if not f["in_loss"]]
    assert prefills[1] == {"in_loss": False, "image_pads": [tokens] * 2, "mm_marked": [tokens] * 2}
    suffix = second["prompt_ids"][0][len(first["prompt_ids"][0]) + len(run["call_ids"]):]
    assert suffix.count(run["image_pad"]) == n_tool // MERGE
    text = run["processor"].tokenizer.decode(suffix)
    assert "<tool_response>\n<|vision_start|><|image_pad|>" in text and "<|vision_end|>" in text


def test_tool_image_reaches_loss_forward(run):
    (inputs,) = run["loss_inputs"]
    grid_prompt, grid_tool = [1, PROMPT_SIDE // 16, PROMPT_SIDE // 16], [1, TOOL_SIDE // 16, TOOL_SIDE // 16]
    assert inputs["image_grid_thw"].tolist() == [grid_prompt, grid_tool] * 2
    assert inputs["num_images"] == [2, 2]
    (loss_vision,) = [v for v in run["vision"] if v["in_loss"]]
    assert loss_vision["grad"] and loss_vision["grid"] == [grid_prompt, grid_tool] * 2
    n_prompt, n_tool = PROMPT_SIDE * PROMPT_SIDE // 256, TOOL_SIDE * TOOL_SIDE // 256
    assert torch.equal(loss_vision["pixels"][n_prompt:n_prompt + n_tool], _pixels(run["processor"], run["tool_image"]))
    assert torch.equal(loss_vision["pixels"][:n_prompt], _pixels(run["processor"], run["prompt_image"]))

    tokens = (n_prompt + n_tool) // MERGE
    (loss_fwd,) = [f for f in run["forward"] if f["in_loss"]]
    assert loss_fwd["image_pads"] == [tokens] * 2 and loss_fwd["mm_marked"] == [tokens] * 2
    # the tool's image tokens sit in the completion, masked out of the loss with the rest of the tool suffix
    call, answer = run["call_ids"], run["answer_ids"]
    completion = inputs["completion_ids"][0].tolist()
    suffix_len = len(completion) - len(call) - len(answer)
    assert completion[:len(call)] == call and completion[len(call) + suffix_len:] == answer
    assert completion[len(call):len(call) + suffix_len].count(run["image_pad"]) == n_tool // MERGE
    assert inputs["tool_mask"][0].tolist() == [1] * len(call) + [0] * suffix_len + [1] * len(answer)

    # the tool image conditions the loss: other pixels there -> other log-probs for the post-tool tokens
    trainer = run["trainer"]

    def logps(pixel_values):
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        with torch.no_grad():
            out, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model, ids, mask, inputs["completion_ids"].size(1), pixel_values=pixel_values,
                image_grid_thw=inputs["image_grid_thw"], num_images=inputs["num_images"],
                mm_token_type_ids=inputs["mm_token_type_ids"])
        return out

    other = inputs["pixel_values"].clone()
    other[n_prompt:n_prompt + n_tool] = -other[n_prompt:n_prompt + n_tool]  # rollout 0's tool image only
    base, changed = logps(inputs["pixel_values"]), logps(other)
    answer_slice = slice(len(call) + suffix_len, len(completion))
    assert not torch.allclose(base[0, answer_slice], changed[0, answer_slice])
    assert torch.allclose(base[0, :len(call)], changed[0, :len(call)])  # causal: tokens before the image unchanged
    assert torch.allclose(base[1], changed[1])


def test_loss_has_no_slot_for_an_off_sequence_action_logprob(run):
    (inputs,) = run["loss_inputs"]
    batch, length = inputs["completion_ids"].shape
    tokens = {"prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "tool_mask"}
    images = {"pixel_values", "image_grid_thw", "num_images", "mm_token_type_ids"}
    per_token_logps = {k for k in inputs if k.endswith("per_token_logps")}
    assert set(inputs) - tokens - images - per_token_logps == {"advantages", "num_items_in_batch"}
    assert inputs["advantages"].shape == (batch,)
    for key in per_token_logps:
        assert inputs[key] is None or inputs[key].shape == (batch, length), key
    # a per-rollout column reaches the reward functions, never the loss
    assert run["reward_calls"][0]["kwargs"]["pointer_logp"] == [-1.25, -1.25]
    assert not any("pointer" in k for k in inputs)
    # the log-probs of the loss come from the LM over (prompt + completion) token ids alone
    params = list(inspect.signature(type(run["trainer"])._get_per_token_logps_and_entropies).parameters)
    assert params[:5] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep"]
    source = inspect.getsource(run["trainer"].__class__.__mro__[1]._compute_loss)
    assert "per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(" in source


def test_history_is_raw_completion_tokens_plus_tool_suffix(run):
    trainer, tok = run["trainer"], run["processor"].tokenizer
    first, second = run["generate"][:2]
    assert run["executed"][0] == {"generated": GENERATED_BOX, "executed": REFINED_BOX}
    (reward_call,) = run["reward_calls"]
    for i, history in enumerate(second["prompt_ids"]):
        call_msg, tool_msg, answer_msg = reward_call["completions"][i]
        suffix = trainer._get_tool_suffix_ids([tool_msg])
        assert history == first["prompt_ids"][i] + run["call_ids"] + suffix  # concatenation, no re-tokenization
        # the assistant turn shown to the next turn, and parsed for the reward, keeps the generated box;
        # the refined box appears only as tool-response text (tool_mask 0)
        assert call_msg["tool_calls"][0]["function"]["arguments"] == {"box": GENERATED_BOX}
        head, tail = tok.decode(history[:len(first["prompt_ids"][i]) + len(run["call_ids"])]), tok.decode(suffix)
        assert str(GENERATED_BOX) in head and str(REFINED_BOX) not in head
        assert tail.index("<tool_response>") < tail.index(str(REFINED_BOX)) < tail.index("</tool_response>")
        assert answer_msg == {"role": "assistant", "content": "red"}


def test_qwen2_5_vl_template_cannot_carry_tools(tiny_models, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import supports_tool_calling

    folder = tiny_models["qwen2_5_vl"]
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    assert supports_tool_calling(AutoProcessor.from_pretrained(tiny_models["qwen3_vl"], local_files_only=True))
    assert not supports_tool_calling(processor)

    def zoom(box: list[int]) -> str:
        """Zoom.

        Args:
            box: region.
        """
        return "ok"

    from datasets import Dataset

    model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[],
                      per_device_train_batch_size=2, num_generations=2, max_steps=1)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(ValueError, match="does not support tool calling"):
        GRPOTrainer(model=model, reward_funcs=lambda completions, **k: [0.0] * len(completions), args=args,
                    train_dataset=ds, processing_class=processor, tools=[zoom])


def test_tool_suffix_needs_a_template_that_renders_tool_images(tiny_models):
    """#5663's failure mode, reproduced on TRL's real ``_get_tool_suffix_ids``: with a template that
    drops image parts of tool messages, the suffix cannot be built and TRL stops loudly (no silent
    loss of the image). The shipped ``qwen3_vl.jinja`` renders them."""
    from types import SimpleNamespace

    from transformers import AutoProcessor
    from trl import GRPOTrainer

    processor = AutoProcessor.from_pretrained(tiny_models["qwen3_vl"], local_files_only=True)
    tok = processor.tokenizer
    host = SimpleNamespace(processing_class=processor, _tokenizer=tok, _is_vlm=True, chat_template=None,
                           chat_template_kwargs={})
    message = {"role": "tool", "name": "zoom",
               "content": [{"type": "image", "image": _pattern(TOOL_SIDE, 2)}, {"type": "text", "text": "zoomed"}]}
    suffix = GRPOTrainer._get_tool_suffix_ids(host, [dict(message)])
    assert suffix.count(tok.convert_tokens_to_ids("<|image_pad|>")) == TOOL_SIDE * TOOL_SIDE // 256 // MERGE

    placeholder = "<|vision_start|><|image_pad|><|vision_end|>"
    template = processor.chat_template
    tool_branch = template.index('message.role == "tool"')
    at = template.index(placeholder, tool_branch)
    processor.chat_template = template[:at] + template[at + len(placeholder):]
    with pytest.raises(ValueError, match="image_pad"):
        GRPOTrainer._get_tool_suffix_ids(host, [dict(message)])
