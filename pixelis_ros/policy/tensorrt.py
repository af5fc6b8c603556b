"""TensorRT: engines built from the ONNX folder, cached, and the ``tensorrt`` policy backend.

Engines are built by ONNX Runtime's TensorRT execution provider (the same graphs, no second
exporter), with its engine cache on: the first session on a GPU builds and writes the engines, later
sessions deserialize them. The cache folder is keyed by TensorRT version, GPU name, compute
capability and precision, so a driver/GPU/precision change gets a fresh folder instead of a
mismatched engine, and nothing is rebuilt on every start. ``pixelis export trt`` runs one
generation to fill the cache ahead of deployment and records the key in ``engines.json``.

Optimisation profiles are explicit (min/opt/max shapes from ``TrtOptions``): without them the EP
rebuilds an engine whenever a sequence grows past the shapes it has seen.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pixelis_ros.policy.base import PolicyError
from pixelis_ros.policy.onnx_folder import check_onnx_folder

ENGINES = "engines.json"


class TensorRTUnavailable(PolicyError):
    """TensorRT (or a GPU, or onnxruntime's TensorRT EP) is not present on this machine."""


class EngineMismatch(PolicyError):
    """An engine cache was built for another model, TensorRT version, GPU or precision."""


@dataclass(frozen=True)
class TrtOptions:
    """How engines are built."""

    precision: str = "fp16"
    """fp32, fp16 or int8 (int8 without a calibration table uses TensorRT's implicit quantisation)."""
    cache_dir: str | None = None
    """Root of the engine cache; default ``<onnx folder>/trt_cache``."""
    max_seq: int = 4096
    """Longest prompt + generation the decoder profile accepts."""
    max_patches: int = 16384
    """Most vision patches per call (all images of one turn) the vision profile accepts."""
    workspace_bytes: int = 4 << 30
    """TensorRT builder workspace."""


def tensorrt_version() -> str:
    try:
        import tensorrt
    except ImportError:
        raise TensorRTUnavailable("TensorRT is not installed (import tensorrt failed): install TensorRT and "
                                  "onnxruntime-gpu on a machine with an NVIDIA GPU, or use the onnx backend") from None
    return tensorrt.__version__


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability) of device 0."""
    try:
        import pycuda.driver as drv  # noqa: F401 — optional; fall back to nvidia-smi
    except ImportError:
        drv = None
    if drv is not None:
        drv.init()
        dev = drv.Device(0)
        major, minor = dev.compute_capability()
        return dev.name(), f"{major}.{minor}"
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        raise TensorRTUnavailable("no NVIDIA GPU found (nvidia-smi failed): TensorRT engines need one") from None
    name, cap = (s.strip() for s in out.split(","))
    return name, cap


def cache_key(precision: str) -> str:
    """``trt<version>_<gpu>_sm<cc>_<precision>``: a folder name that changes whenever an engine would not fit."""
    name, cap = gpu_identity()
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return f"trt{tensorrt_version()}_{gpu}_sm{cap.replace('.', '')}_{precision}"


def _profile(folder_manifest: dict, role: str, options: TrtOptions) -> dict[str, str]:
    """trt_profile_{min,opt,max}_shapes strings for one graph."""
    t = folder_manifest["text"]
    v = folder_manifest["vision"]
    unit = v["spatial_merge_size"] ** 2
    if role == "vision":
        dims = {"pixel_values": ("p", folder_manifest["patch_dim"]), "rotary_pos_ids": ("p", 2), "frame_segments": ("p",),
                "window_index": ("m",), "reverse_index": ("m",), "window_segments": ("p",),
                "interp_indices": ("p", 4), "interp_weights": ("p", 4)}
        sizes = {"min": {"p": unit, "m": 1}, "opt": {"p": 1024, "m": 1024 // unit},
                 "max": {"p": options.max_patches, "m": options.max_patches // unit}}
        names = folder_manifest["files"]["vision"]["inputs"]
    else:
        kv = (1, t["num_kv_heads"], "past", t["head_dim"])
        dims = {"input_ids": (1, "seq"), "image_embeds": ("rows", t["hidden_size"]), "position_ids": (3, 1, "seq"),
                "attention_mask": (1, "total"), "deepstack_embeds": (t["deepstack_layers"], "rows", t["hidden_size"])}
        sizes = {"min": {"seq": 1, "rows": 0, "total": 1, "past": 0},
                 "opt": {"seq": 1, "rows": 0, "total": 512, "past": 511},
                 "max": {"seq": options.max_seq, "rows": options.max_seq, "total": options.max_seq, "past": options.max_seq}}
        names = folder_manifest["files"]["decoder"]["inputs"]
        for n in names:
            if n.startswith("past_key_values"):
                dims[n] = kv
    out = {}
    for which, size in sizes.items():
        parts = []
        for n in names:
            if n.startswith("lora."):  # LoRA matrices (--lora adapters) have static shapes: no profile needed
                continue
            shape = [size[d] if isinstance(d, str) else d for d in dims[n]]
            parts.append(f"{n}:{'x'.join(str(s) for s in shape)}")
        out[f"trt_profile_{which}_shapes"] = ",".join(parts)
    return out


def trt_provider_options(folder: Path, manifest: dict, options: TrtOptions) -> tuple[Path, dict, dict]:
    """(cache folder, TensorRT EP options, per-graph shape profiles) for this machine."""
    if options.precision not in ("fp32", "fp16", "int8"):
        raise PolicyError(f"precision must be fp32, fp16 or int8, got {options.precision!r}")
    key = cache_key(options.precision)
    cache = Path(options.cache_dir or folder / "trt_cache") / key
    cache.mkdir(parents=True, exist_ok=True)
    profiles = {role: _profile(manifest, role, options) for role in ("vision", "decoder")}
    return cache, profiles, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                   "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
                   "trt_fp16_enable": options.precision in ("fp16", "int8"), "trt_int8_enable": options.precision == "int8",
                   "trt_max_workspace_size": options.workspace_bytes}


def check_engine_record(cache: Path, manifest: dict) -> None:
    """An existing cache must have been built from these graphs (engines.json names their digest)."""
    record = cache / ENGINES
    if not record.is_file():
        return
    recorded = json.loads(record.read_text())
    if recorded.get("config_sha256") != manifest["source"]["config_sha256"] or \
            recorded.get("files") != {r: e["bytes"] for r, e in manifest["files"].items()}:
        raise EngineMismatch(f"{record}: the engines in {cache} were built from another ONNX export; delete {cache} "
                             f"or rebuild with `pixelis export trt --onnx DIR --cache OTHER_DIR`")


def _require_trt_ep() -> None:
    import onnxruntime as ort

    tensorrt_version()
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        raise TensorRTUnavailable("onnxruntime has no TensorrtExecutionProvider here (available: "
                                  f"{', '.join(ort.get_available_providers())}): install onnxruntime-gpu with TensorRT")


def load_tensorrt_policy(model_dir: str | Path, **options):
    """The ``tensorrt`` backend: the ONNX policy on the TensorRT EP (CUDA/CPU for what TensorRT leaves)."""
    from pixelis_ros.policy.onnx import OnnxOptions, OnnxPolicy

    _require_trt_ep()
    folder = Path(model_dir)
    manifest = check_onnx_folder(folder)
    trt_keys = {f for f in TrtOptions.__dataclass_fields__}
    trt = TrtOptions(**{k: v for k, v in options.items() if k in trt_keys})
    cache, profiles, ep = trt_provider_options(folder, manifest, trt)
    check_engine_record(cache, manifest)
    onnx_opts = OnnxOptions(**{k: v for k, v in options.items() if k not in trt_keys})
    if onnx_opts.providers is None:
        onnx_opts.providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    policy = OnnxPolicy(folder, onnx_opts, provider_options={"TensorrtExecutionProvider": ep},
                        role_provider_options={r: {"TensorrtExecutionProvider": p} for r, p in profiles.items()})
    policy.name = "tensorrt"
    policy.engine_cache = cache
    return policy


def build_engines(onnx_dir: str | Path, options: TrtOptions = TrtOptions()) -> dict:
    """``pixelis export trt``: fill the engine cache (one short generation) unless it is already filled."""
    import time

    _require_trt_ep()
    folder = Path(onnx_dir)
    manifest = check_onnx_folder(folder)
    cache, _, _ = trt_provider_options(folder, manifest, options)
    check_engine_record(cache, manifest)
    had = sorted(p.name for p in cache.glob("*.engine"))
    t0 = time.perf_counter()
    policy = load_tensorrt_policy(folder, **asdict(options), max_new_tokens=2, ignore_stop=True)
    image = np.zeros((448, 448, 3), np.uint8)
    messages = [{"role": "user", "content": [{"type": "image", "image": "frame:-1"}, {"type": "text", "text": "warm up"}]}]
    policy.generate(messages, {"frame:-1": image})
    engines = sorted(p.name for p in cache.glob("*.engine"))
    (cache / ENGINES).write_text(json.dumps({"config_sha256": manifest["source"]["config_sha256"],
                                             "files": {r: e["bytes"] for r, e in manifest["files"].items()},
                                             "key": cache.name, "engines": engines}, indent=2) + "\n")
    return {"cache": str(cache), "key": cache.name, "engines": engines, "built": sorted(set(engines) - set(had)),
            "reused": sorted(set(had) & set(engines)), "seconds": round(time.perf_counter() - t0, 2)}
