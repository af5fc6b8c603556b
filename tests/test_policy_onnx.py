"""ONNX Runtime policy: greedy parity with transformers, the Policy protocol, providers, TensorRT/CUDA."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
torch = pytest.importorskip("torch")

from onnx_exports import exported  # noqa: E402

from pixelis_ros.policy.base import Generation, Policy, PolicyError  # noqa: E402
from pixelis_ros.policy.registry import load_policy  # noqa: E402

MESSAGES = [{"role": "system", "content": [{"type": "text", "text": "You can zoom."}]},
            {"role": "user", "content": [{"type": "image", "image": "frame:-1"}, {"type": "text", "text": "What is red?"}]}]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


def image(h=448, w=448, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def torch_greedy(model_dir, enc, n):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True).eval()
    with torch.no_grad():
        out = model.generate(**{k: torch.from_numpy(v) for k, v in enc.items()}, max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, eos_token_id=None)
    return out[0, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("arch,preset", [("qwen2_5_vl", "tiny"), ("qwen3_vl", "tiny"), ("qwen2_5_vl", "small"),
                                         ("qwen3_vl", "small")])
def test_greedy_tokens_equal_transformers_generate(root, arch, preset):
    from pixelis_ros.policy.prompt import encode_prompt

    model_dir, onnx_dir = exported(root, arch, preset)
    policy = load_policy("onnx", onnx_dir, max_new_tokens=48, ignore_stop=True, providers=["CPUExecutionProvider"])
    enc = encode_prompt(policy.processor, MESSAGES, {"frame:-1": image(300, 448)})  # not square: rows != cols
    tokens, _ = policy.decode(enc)
    assert tokens == torch_greedy(model_dir, enc, 48)


def test_policy_protocol_stops_and_logprobs(root):
    _, onnx_dir = exported(root, "qwen3_vl", "tiny")
    policy = load_policy("onnx", onnx_dir, max_new_tokens=12, logprobs=True)
    assert isinstance(policy, Policy)
    gen = policy.generate(MESSAGES, {"frame:-1": image()})
    assert isinstance(gen, Generation) and isinstance(gen.text, str)
    assert gen.token_logprobs and all(lp <= 0.0 for lp in gen.token_logprobs)
    assert len(gen.token_logprobs) <= 12
    # a second turn with a tool-response image in a new user turn (two images, different sizes)
    follow = MESSAGES + [{"role": "assistant", "content": [{"type": "text", "text": gen.text}]},
                         {"role": "user", "content": [{"type": "text", "text": "<tool_response>\n{}\n</tool_response>"},
                                                      {"type": "image", "image": "obs:0"}]}]
    again = policy.generate(follow, {"frame:-1": image(), "obs:0": image(120, 200, seed=1)})
    assert isinstance(again.text, str)


def test_sampling_is_seeded(root):
    _, onnx_dir = exported(root, "qwen2_5_vl", "tiny")
    runs = [load_policy("onnx", onnx_dir, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=3, ignore_stop=True)
            .generate(MESSAGES, {"frame:-1": image()}).text for _ in range(2)]
    assert runs[0] == runs[1]


def test_missing_image_and_unknown_option_are_policy_errors(root):
    _, onnx_dir = exported(root, "qwen2_5_vl", "tiny")
    with pytest.raises(PolicyError, match="frame:-1"):
        load_policy("onnx", onnx_dir).generate(MESSAGES, {})
    with pytest.raises(PolicyError, match=r"unknown option\(s\) \[.beams.\] for the onnx backend"):
        load_policy("onnx", onnx_dir, beams=4)


def test_unavailable_provider_is_named(root):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA EP; the error path needs a build without it")
    _, onnx_dir = exported(root, "qwen2_5_vl", "tiny")
    with pytest.raises(PolicyError, match="CUDAExecutionProvider is not available"):
        load_policy("onnx", onnx_dir, providers=["CUDAExecutionProvider"])


def test_default_provider_order_prefers_tensorrt_then_cuda_then_cpu(monkeypatch):
    import onnxruntime as ort

    from pixelis_ros.policy.onnx import choose_providers

    # This build: what it has of TensorRT/CUDA, then the CPU, and nothing else (not Azure).
    real = ort.get_available_providers()
    chosen = choose_providers(None)
    assert chosen[-1] == "CPUExecutionProvider" and set(chosen) <= set(real)
    assert "AzureExecutionProvider" not in chosen
    # Builds this machine may not have (onnxruntime lists providers in an order of its own): the
    # expected preference is written out by hand, not recomputed from PROVIDER_ORDER.
    monkeypatch.setattr(ort, "get_available_providers", lambda: [
        "CPUExecutionProvider", "AzureExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"])
    assert choose_providers(None) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(None, {"CUDAExecutionProvider": {"device_id": 1}}) == [
        "TensorrtExecutionProvider", ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider", "CUDAExecutionProvider"])
    assert choose_providers(None) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cuda_ep_parity(root):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers() or not torch.cuda.is_available():
        pytest.skip("CUDA EP parity needs onnxruntime-gpu and an NVIDIA GPU (none here)")
    from pixelis_ros.policy.prompt import encode_prompt

    model_dir, onnx_dir = exported(root, "qwen3_vl", "tiny")
    policy = load_policy("onnx", onnx_dir, max_new_tokens=24, ignore_stop=True,
                         providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    enc = encode_prompt(policy.processor, MESSAGES, {"frame:-1": image()})
    tokens, _ = policy.decode(enc)
    assert tokens == torch_greedy(model_dir, enc, 24)


def test_tensorrt_backend(root, tmp_path):
    import onnxruntime as ort

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("TensorRT is not installed (it cannot be installed on this machine); the tensorrt backend "
                    "raises TensorRTUnavailable here (tested in test_policy_export.py)")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no TensorRT EP here")
    from pixelis_ros.policy.tensorrt import TrtOptions, build_engines

    _, onnx_dir = exported(root, "qwen2_5_vl", "tiny")
    first = build_engines(onnx_dir, TrtOptions(precision="fp32", cache_dir=str(tmp_path)))
    assert first["engines"]
    again = build_engines(onnx_dir, TrtOptions(precision="fp32", cache_dir=str(tmp_path)))
    assert again["built"] == [] and again["reused"] == first["engines"]  # never rebuilt when present
    policy = load_policy("tensorrt", onnx_dir, precision="fp32", cache_dir=str(tmp_path), max_new_tokens=8)
    assert isinstance(policy.generate(MESSAGES, {"frame:-1": image()}).text, str)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_generate_equals_hf_policy(root, arch):
    model_dir, onnx_dir = exported(root, arch, "tiny")
    frames = {"frame:-1": image(240, 320)}
    ours = load_policy("onnx", onnx_dir, max_new_tokens=24, logprobs=True).generate(MESSAGES, frames)
    theirs = load_policy("torch", model_dir, max_new_tokens=24).generate(MESSAGES, frames)
    assert ours.token_ids == theirs.token_ids
    assert ours.text == theirs.text and ours.finish_reason == theirs.finish_reason
    np.testing.assert_allclose(ours.token_logprobs, theirs.token_logprobs, atol=1e-3)
