"""``pixelis export onnx``: a local Qwen-VL folder -> a self-contained ONNX folder.

The folder holds ``vision.onnx`` and ``decoder.onnx`` (see ``onnx_graphs``), the tokenizer /
processor / config files copied from the model, and ``manifest.json``: what the runtime checks
before trusting the graphs (source config digest, io names, file sizes, opset, dtype) and the
constants it needs (layer count, KV shape, special token ids, vision grid parameters). Auxiliary
heads (``heads.safetensors``) next to the model or adapter are copied in; the decoder's
``last_hidden_state`` output feeds them on the ONNX side.

LoRA: by default (``lora="merged"``) an adapter folder is merged into the weights before export
(peft ``merge_and_unload``), so the graphs are the plain architecture. With ``lora="adapters"``
the decoder takes the adapter's A/B matrices as inputs and the folder holds the adapter as an
ONNX Runtime adapter file (``onnx_lora``): later adapters swap in without a re-export.
Export goes through ``torch.onnx.export(dynamo=True)``
(torch.export + onnxscript), the exporter that traces transformers 5's cache objects.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from pixelis_ros.policy.base import PolicyError
from pixelis_ros.policy.heads_numpy import HEADS_CONFIG, HEADS_FILE
from pixelis_ros.policy.onnx_folder import FORMAT, MANIFEST
from pixelis_ros.policy.onnx_inputs import VisionSpec
from pixelis_ros.policy.onnx_lora import ADAPTER_FILE, MODES, PeftLora, graph_tensors, manifest_entry, read_peft_adapter, \
    write_ort_adapter

# Files a processor/tokenizer folder may hold; copied so the ONNX folder needs nothing else.
SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
              "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
              "processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
              "pixelis_prompt.json")


class ExportError(PolicyError):
    """The export cannot run (a bad adapter folder); bad model folders raise ``ModelFolderError``."""


@dataclass(frozen=True)
class ExportConfig:
    """How ``export_onnx`` writes the graphs."""

    opset: int = 18  # ONNX opset; 18 runs on ONNX Runtime >= 1.14 and TensorRT >= 8.6
    adapter: str | None = None  # a peft LoRA adapter folder (merged, or kept as ORT adapters: see lora)
    lora: str = "merged"  # "merged": fold the adapter into the weights; "adapters": A/B as decoder inputs
    external_data_bytes: int = 1 << 30  # weights above this size go to <graph>.onnx.data (protobuf caps at 2 GB)


def config_digest(model_dir: Path) -> str:
    """sha256 of config.json: the cheap identity the runtime checks on every load."""
    return hashlib.sha256((Path(model_dir) / "config.json").read_bytes()).hexdigest()


def weights_digest(model_dir: Path) -> str:
    """sha256 over the safetensors files (names and bytes), recorded to trace an export to its source."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()


def load_for_export(model_dir: Path, adapter: str | None, lora: str = "merged"):
    """The model in float32 eval mode, the LoRA merged (or, in adapters mode, left out and read
    as a ``PeftLora`` for the decoder's inputs); clear errors for folders that cannot load."""
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    from pixelis_ros.policy.model_folder import check_model_folder

    hf_logging.disable_progress_bar()  # its "Loading weights" bar would land in the command's stderr
    arch = check_model_folder(model_dir).arch  # names the missing file / foreign architecture
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True, dtype="float32",
                                                        use_safetensors=True, attn_implementation="eager")
    if lora not in MODES:
        raise ExportError(f"--lora {lora!r}: use one of {', '.join(MODES)}")
    if lora == "adapters":
        if not adapter:
            raise ExportError("--lora adapters needs --adapter ADAPTER_DIR: the adapter's rank and target modules "
                              "shape the decoder's LoRA inputs")
        peft_lora = read_peft_adapter(adapter)
        outside = [m for m in peft_lora.weights if ".language_model." not in f".{m}"]
        if outside:
            raise ExportError(f"{Path(adapter) / 'adapter_model.safetensors'}: LoRA on {outside[0]} (outside the "
                              f"language model) cannot be kept as decoder adapters; export with `--lora merged`")
        return model.eval(), arch, peft_lora
    if adapter:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ExportError(f"{Path(adapter) / 'adapter_config.json'} is missing: --adapter must be a peft adapter folder")
        from pixelis_ros.policy.hf import peft_wrapping

        with peft_wrapping():
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.eval(), arch, None


def vision_spec(model, arch: str) -> VisionSpec:
    vc = model.config.vision_config
    return VisionSpec(arch=arch, spatial_merge_size=vc.spatial_merge_size, patch_size=vc.patch_size,
                      window_size=vc.window_size if arch == "qwen2_5_vl" else 0,
                      num_grid_per_side=int(vc.num_position_embeddings ** 0.5) if arch == "qwen3_vl" else 0)


def text_spec(model) -> dict:
    tc = model.config.text_config
    return {"num_layers": tc.num_hidden_layers, "num_kv_heads": tc.num_key_value_heads,
            "head_dim": getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads,
            "hidden_size": tc.hidden_size, "vocab_size": tc.vocab_size,
            "image_token_id": model.config.image_token_id,
            "deepstack_layers": len(getattr(model.config.vision_config, "deepstack_visual_indexes", None) or [])}


def _io_names(onnx_path: Path) -> dict:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return {"inputs": [i.name for i in graph.input], "outputs": [o.name for o in graph.output]}


def _export(module, args: tuple, path: Path, input_names, output_names, dynamic_shapes, config: ExportConfig,
            large: bool, defaults: dict | None = None) -> None:
    """``defaults``: input name -> array stored as that input's initializer (an optional input).
    ONNX Runtime adapters feed such inputs; its Python API refuses a run that lacks a required one."""
    import onnx_ir as ir
    import torch

    module.eval()  # the graph wrappers are fresh nn.Modules, in training mode until told otherwise
    with warnings.catch_warnings():
        # Inputs sharing a dynamic axis share its name on purpose (e.g. "seq"): the exporter warns
        # once per such name that it keeps one, which is what we want.
        warnings.filterwarnings("ignore", message=r"# The axis name: \w+ will not be used, since it shares the same "
                                                  r"shape constraints", category=UserWarning, module=r"torch\.onnx\.")
        program = torch.onnx.export(module, args, dynamo=True, input_names=input_names, output_names=output_names,
                                    dynamic_shapes=dynamic_shapes, opset_version=config.opset, optimize=True,
                                    verbose=False)
    for value in program.model.graph.inputs:
        if defaults and value.name in defaults:
            value.const_value = ir.tensor(defaults[value.name], name=value.name)
            program.model.graph.register_initializer(value)
    program.save(str(path), external_data=large)


def export_vision(model, arch: str, spec: VisionSpec, path: Path, config: ExportConfig, large: bool) -> None:
    import numpy as np
    import torch
    from torch.export import Dim

    from pixelis_ros.policy.onnx_graphs import VisionGraph
    from pixelis_ros.policy.onnx_inputs import vision_inputs

    vc = model.config.vision_config
    side = 4 * spec.spatial_merge_size  # a 2x2 window grid of merged tokens: exercises both attention kinds
    grid = np.array([[1, side, side + 2 * spec.spatial_merge_size]])
    patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2
    feeds = vision_inputs(np.zeros((int(grid.prod()), patch_dim), np.float32), grid, spec)
    names = list(feeds)
    patches, merged = Dim("patches", min=4), Dim("merged", min=1)
    shapes = {"pixel_values": {0: patches}, "rotary_pos_ids": {0: patches}, "frame_segments": {0: patches},
              "window_index": {0: merged}, "reverse_index": {0: merged}, "window_segments": {0: patches},
              "interp_indices": {0: patches}, "interp_weights": {0: patches}}
    outputs = ["image_embeds"] + (["deepstack_embeds"] if arch == "qwen3_vl" else [])
    graph = VisionGraph(model, arch).eval()
    kwargs = {k: torch.from_numpy(v) for k, v in feeds.items()}

    class Positional(torch.nn.Module):  # torch.export names inputs after positional parameters
        def __init__(self):
            super().__init__()
            self.inner = graph  # not "graph": that name belongs to fx.GraphModule

        def forward(self, *args):
            return self.inner(**dict(zip(names, args)))

    # a *args forward takes its dynamic shapes as one nested tuple
    _export(Positional(), tuple(kwargs.values()), path, names, outputs,
            (tuple(shapes[n] for n in names),), config, large)


def export_decoder(model, arch: str, text: dict, path: Path, config: ExportConfig, large: bool,
                   lora: PeftLora | None = None) -> None:
    import numpy as np
    import torch
    from torch.export import Dim

    from pixelis_ros.policy.onnx_graphs import DecoderGraph

    modules = sorted(lora.weights) if lora else []
    graph = DecoderGraph(model, arch, text["image_token_id"], modules).eval()
    seq, past, rows = 5, 3, 2
    ids = torch.randint(0, text["vocab_size"], (1, seq))
    ids[0, 1:3] = text["image_token_id"]
    hidden = model.config.text_config.hidden_size
    image_rows = torch.zeros(rows, hidden)
    positions = torch.arange(past, past + seq).view(1, 1, -1).expand(3, 1, -1).contiguous()
    mask = torch.ones(1, past + seq, dtype=torch.int64)
    kv = [torch.zeros(1, text["num_kv_heads"], past, text["head_dim"]) for _ in range(2 * text["num_layers"])]
    s, p, r, t = Dim("seq", min=1), Dim("past", min=0), Dim("image_rows", min=0), Dim("total", min=1)
    names = ["input_ids", "image_embeds", "position_ids", "attention_mask"]
    names += [f"past_key_values.{i}.{kind}" for i in range(text["num_layers"]) for kind in ("key", "value")]
    shapes = [{1: s}, {0: r}, {2: s}, {1: t}] + [{2: p}] * len(kv)
    args = [ids, image_rows, positions, mask, *kv]
    if arch == "qwen3_vl":
        names.append("deepstack_embeds")
        shapes.append({1: r})
        args.append(torch.zeros(text["deepstack_layers"], rows, hidden))
    defaults = {}
    if lora:  # static shapes: rank and sizes are fixed by the export (the manifest records them)
        for name, value in graph_tensors(lora).items():
            names.append(name)
            shapes.append(None)
            args.append(torch.from_numpy(value))
            defaults[name] = np.zeros_like(value)  # no adapter active: B = 0, the base model exactly
    outputs = ["logits"] + [f"present.{i}.{kind}" for i in range(text["num_layers"]) for kind in ("key", "value")]
    outputs.append("last_hidden_state")  # onnx.HIDDEN_OUTPUT (not imported: that module pulls the runtime)
    _export(graph, tuple(args), path, names, outputs, (*shapes[:4], tuple(shapes[4:])), config, large, defaults)


def export_onnx(model_dir: str | Path, out_dir: str | Path, config: ExportConfig = ExportConfig()) -> dict:
    """Write the ONNX folder; returns the manifest."""
    import torch

    model_dir, out = Path(model_dir), Path(out_dir)
    model, arch, lora = load_for_export(model_dir, config.adapter, config.lora)
    spec, text = vision_spec(model, arch), text_spec(model)
    large = sum(p.numel() * 4 for p in model.parameters()) > config.external_data_bytes
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        export_vision(model, arch, spec, out / "vision.onnx", config, large)
        export_decoder(model, arch, text, out / "decoder.onnx", config, large, lora)
    for name in SIDE_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out / name)
    # auxiliary heads travel with the export (the adapter's first, as HFPolicy picks them)
    for folder in ([Path(config.adapter)] if config.adapter else []) + [model_dir]:
        if all((folder / name).is_file() for name in (HEADS_FILE, HEADS_CONFIG)):
            for name in (HEADS_FILE, HEADS_CONFIG):
                shutil.copy2(folder / name, out / name)
            break
    vc = model.config.vision_config
    files = {}
    for role in ("vision", "decoder"):
        f = out / f"{role}.onnx"
        data = sorted(p.name for p in out.glob(f"{role}.onnx*.data")) + sorted(p.name for p in out.glob(f"{role}.onnx_data"))
        files[role] = {"path": f.name, "bytes": f.stat().st_size, "external_data": data, **_io_names(f)}
    weights = weights_digest(model_dir)
    lora_entry = {"mode": "merged"} if lora is None else manifest_entry(lora, weights)
    if lora is not None:
        write_ort_adapter(graph_tensors(lora), out / ADAPTER_FILE, lora_entry["model_version"])
    manifest = {"format": FORMAT, "arch": arch, "opset": config.opset, "dtype": "float32",
                "source": {"model_dir": str(model_dir.resolve()), "config_sha256": config_digest(model_dir),
                           "weights_sha256": weights, "adapter": config.adapter, "lora": config.lora},
                "lora": lora_entry,
                "files": files, "vision": asdict(spec), "text": {**text, "hidden_output": "last_hidden_state"},
                "heads": (out / HEADS_FILE).is_file(),
                "patch_dim": vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
