"""Model folders broken the ways checkpoints arrive broken (issue #13): each is refused by
``check_model_folder`` with our error naming the file, before transformers builds anything, and
the node's start-up turns it into a ConfigError instead of a traceback."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from pixelis_ros.node.agent_core import AgentNodeCore, build_policy
from pixelis_ros.node.config import AgentNodeConfig, ConfigError
from pixelis_ros.policy.folder_kind import folder_kind, resolve_backend
from pixelis_ros.policy.model_folder import ModelFolderError, check_model_folder


@pytest.fixture
def folder(tiny_models, tmp_path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(tiny_models["qwen3_vl"], out)
    return out


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def header_length(path: Path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_the_tiny_folder_passes(folder):
    assert check_model_folder(folder).arch == "qwen3_vl"


def test_100000_layers_is_refused_from_the_config_before_building(folder):
    edit_json(folder / "config.json", lambda c: c["text_config"].update(num_hidden_layers=100_000))
    with pytest.raises(ModelFolderError, match=r"text_config.num_hidden_layers must be an integer in 1..1024, got 100000"):
        check_model_folder(folder)


def test_layer_count_that_disagrees_with_the_weights_is_refused(folder):
    edit_json(folder / "config.json", lambda c: c["text_config"].update(num_hidden_layers=12))
    with pytest.raises(ModelFolderError, match=r"num_hidden_layers is 12 but the weights hold 2 decoder layers"):
        check_model_folder(folder)


@pytest.mark.parametrize("key, value, message", [
    ("hidden_size", 256, r"vocab_size x hidden_size is 1216 x 256 but the weights' embed_tokens is 1216 x 128"),
    ("intermediate_size", 512, r"intermediate_size is 512 but the weights' mlp.gate_proj has 256 rows"),
    ("hidden_size", "128", r"text_config.hidden_size must be an integer in 1..65536, got '128'"),
    ("vocab_size", 2**63, r"text_config.vocab_size must be an integer in 1..4194304"),
])
def test_sizes_that_disagree_with_the_weights_are_refused(folder, key, value, message):
    edit_json(folder / "config.json", lambda c: c["text_config"].update({key: value}))
    with pytest.raises(ModelFolderError, match=message):
        check_model_folder(folder)


def test_truncated_safetensors_is_refused(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelFolderError, match=r"model.safetensors: tensor '.*' has a broken entry .* truncated or corrupt"):
        check_model_folder(folder)


def test_random_safetensors_is_refused(folder):
    import random

    weights = folder / "model.safetensors"
    weights.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(ModelFolderError, match=r"claims a \d+-byte header in a 4096-byte file"):
        check_model_folder(folder)


def test_tensor_offsets_that_lie_are_refused(folder):
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    n = header_length(weights)
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [header[name]["shape"][0] * 2] + header[name]["shape"][1:]
    raw = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(data[8 + n:]))
    with pytest.raises(ModelFolderError, match=f"tensor '{name}' has a broken entry"):
        check_model_folder(folder)


@pytest.mark.parametrize("index, message", [
    ("{", r"model.safetensors.index.json is not valid JSON"),
    ('{"weight_map": []}', r"holds no 'weight_map' object"),
    ('{"weight_map": {"a": 3}}', r"every 'weight_map' value must be a shard file name"),
    ('{"weight_map": {"a": "../outside.safetensors"}}', r"names '../outside.safetensors', which is outside"),
    ('{"weight_map": {"a": "/etc/hostname"}}', r"names '/etc/hostname', which is outside"),
])
def test_malformed_or_escaping_weight_index_is_refused(folder, index, message):
    (folder / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ModelFolderError, match=message):
        check_model_folder(folder)


def test_weights_linked_from_outside_the_folder_are_refused(folder, tmp_path):
    elsewhere = tmp_path / "elsewhere.safetensors"
    (folder / "model.safetensors").rename(elsewhere)
    (folder / "model.safetensors").symlink_to(elsewhere)
    with pytest.raises(ModelFolderError, match=r"model.safetensors is a link to .*elsewhere.safetensors', outside"):
        check_model_folder(folder)


@pytest.mark.parametrize("content, message", [
    (b'{"model": {"type": "BPE", "vocab": {"a": 0', r"tokenizer.json is not valid JSON"),
    ("{}".encode("utf-16"), r"tokenizer.json is not UTF-8"),
    (b'{"model": {"type": null, "vocab": {}}}', r"holds no model of a known type"),
    (b'{"model": {"type": "BPE", "vocab": {"a": 0}}, "added_tokens": [{"id": 5000, "content": "x"}]}',
     r"defines token id 5000 but config.json's vocab_size is 1216"),
])
def test_tokenizer_errors_are_refused(folder, content, message):
    (folder / "tokenizer.json").write_bytes(content)
    with pytest.raises(ModelFolderError, match=message):
        check_model_folder(folder)


def test_processor_with_a_zero_patch_size_is_refused(folder):
    edit_json(folder / "processor_config.json", lambda c: c["image_processor"].update(patch_size=0))
    with pytest.raises(ModelFolderError, match=r"patch_size must be an integer in 1..1024, got 0"):
        check_model_folder(folder)


def test_node_start_up_reports_a_broken_folder_as_config_error(folder):
    # A 100,000-layer config loaded for minutes before; now start-up refuses it at once.
    edit_json(folder / "config.json", lambda c: c["text_config"].update(num_hidden_layers=100_000))
    core = AgentNodeCore(AgentNodeConfig(model=str(folder)), lambda t, m: None)
    outcome: list = []

    def start():
        try:
            core.activate()
        except ConfigError as e:
            outcome.append(e)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(timeout=120)  # generous: only a hang fails here
    assert not thread.is_alive(), "start-up did not finish"
    [error] = outcome
    assert str(error).startswith(f"parameter 'model' ({folder}, backend auto): {folder / 'config.json'}: "
                                 "text_config.num_hidden_layers must be an integer in 1..1024")


# --- one way to name a model: the backend read from the folder (issue: --model DIR everywhere) ----------
@pytest.fixture(scope="module")
def onnx_folder(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from onnx_exports import exported

    return exported(tmp_path_factory.mktemp("exports"), "qwen3_vl", "tiny")[1]


def test_the_backend_is_read_from_the_folder(tiny_models, onnx_folder, tmp_path):
    torch_dir = tiny_models["qwen3_vl"]
    assert folder_kind(torch_dir) == "torch" and folder_kind(onnx_folder) == "onnx"
    assert resolve_backend("auto", torch_dir) == ("torch", torch_dir)
    assert resolve_backend("auto", onnx_folder) == ("onnx", onnx_folder)
    assert resolve_backend("auto", "") == ("torch", None)  # the bundled model is a torch folder
    assert resolve_backend("onnx", None) == ("onnx", None)  # ... whose ONNX export bundled.default_model makes
    assert resolve_backend("tensorrt", onnx_folder) == ("tensorrt", onnx_folder)  # engines are built on first use
    # `pixelis export trt` leaves trt_cache/<key>/engines.json; auto serves that with TensorRT where it is installed
    trt_dir = tmp_path / "with-engines"
    shutil.copytree(onnx_folder, trt_dir)
    (trt_dir / "trt_cache" / "trt10_gpu_sm90_fp16").mkdir(parents=True)
    (trt_dir / "trt_cache" / "trt10_gpu_sm90_fp16" / "engines.json").write_text("{}")
    assert folder_kind(trt_dir) == "tensorrt"
    with_trt = importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("onnxruntime") is not None
    assert resolve_backend("auto", trt_dir) == ("tensorrt" if with_trt else "onnx", trt_dir)


def test_auto_loads_each_kind_with_its_backend(tiny_models, onnx_folder):
    from pixelis_ros.policy.registry import load_policy

    assert load_policy("auto", onnx_folder).name == "onnx"
    policy = load_policy("auto", tiny_models["qwen3_vl"])
    assert type(policy).__name__ == "HFPolicy" and policy.folder == tiny_models["qwen3_vl"]


def test_missing_and_foreign_folders_say_what_they_are_and_what_to_do(tiny_models, onnx_folder, tmp_path):
    with pytest.raises(ModelFolderError, match=rf"model folder {tmp_path / 'nope'} does not exist; give a torch model "
                                               r"folder \(config.json \+ model.safetensors\) or an ONNX export folder "
                                               r"\(manifest.json\), or build one with `pixelis model build"):
        resolve_backend("auto", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match=r"is not a model folder: it has neither manifest.json \(an ONNX export\) "
                                               r"nor config.json .*`pixelis export onnx --model MODEL_DIR --out DIR`"):
        resolve_backend("auto", tmp_path / "empty")
    with pytest.raises(ModelFolderError, match=r"is an ONNX export folder \(manifest.json, \*.onnx graphs\), which the torch backend "
                                               r"cannot load; serve it with backend onnx \(or auto, the default\)"):
        resolve_backend("torch", onnx_folder)
    torch_dir = tiny_models["qwen3_vl"]
    for backend in ("onnx", "tensorrt"):
        with pytest.raises(ModelFolderError, match=rf"is a torch model folder \(config.json \+ model.safetensors\), which "
                                                   rf"the {backend} backend cannot load .*serve it with backend torch "
                                                   rf".*`pixelis export onnx --model {torch_dir} --out DIR`"):
            resolve_backend(backend, torch_dir)
    with pytest.raises(ModelFolderError, match=r"backend must be one of auto, torch, onnx, tensorrt, got 'pytorch'"):
        resolve_backend("pytorch", torch_dir)


def test_a_bad_folder_is_refused_before_any_backend_is_imported(onnx_folder, tmp_path):
    """The check reads file names only: `pixelis run` says so without importing torch (seconds)."""
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    for model, backend, expected in ((tmp_path / "missing", "auto", "does not exist"),
                                     (onnx_folder, "torch", "is an ONNX export folder")):
        code = ("import json, sys; from pixelis_ros.cli import main; "
                f"rc = main(['run', '--image', {str(image)!r}, '--query', 'q', '--model', {str(model)!r}, "
                f"'--backend', {backend!r}, '--out', {str(tmp_path / 'out')!r}, '--json']); "
                "print(json.dumps({'rc': rc, 'heavy': sorted({'torch', 'transformers', 'onnxruntime'} & set(sys.modules))}))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        error, outcome = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
        assert outcome == {"rc": 2, "heavy": []}, proc.stdout + proc.stderr
        assert error["error"].startswith(f"--model {model} (backend {backend}): ") and expected in error["error"]


def test_node_backend_defaults_to_auto_and_names_the_choices(tmp_path):
    from pixelis_ros.paths import data_dir

    assert AgentNodeConfig().backend == "auto"
    assert AgentNodeConfig.from_yaml(data_dir("config") / "agent.yaml").backend == "auto"
    with pytest.raises(ConfigError, match=r"parameter 'backend' must be torch, onnx or tensorrt, or auto \(read from the model folder\), "
                                          r"got 'pytorch'"):
        AgentNodeConfig(backend="pytorch").check()
    with pytest.raises(ConfigError, match=rf"parameter 'model' \({tmp_path / 'gone'}, backend auto\): model folder "
                                          rf"{tmp_path / 'gone'} does not exist"):
        build_policy(AgentNodeConfig(model=str(tmp_path / "gone")))
