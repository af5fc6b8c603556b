"""``pixelis export onnx|adapter|trt``: registered on the main parser by ``add_export_commands``
(``pixelis_ros/cli/__init__.py`` calls it; ``bench policy`` is in ``cli/bench.py``).

Same conventions as ``cli/sim.py``: each command returns a JSON-able result; ``USAGE_ERRORS`` are
bad input (exit status 2, ``{"error": ...}``). TensorRT being absent is one of them: ``export trt``
says so and exits 2 instead of crashing. Nothing heavy is imported at the top.
"""

from __future__ import annotations

from pixelis_ros.policy.base import PolicyError

USAGE_ERRORS: tuple[type[Exception], ...] = (PolicyError,)


def cmd_export_onnx(args) -> dict:
    from pixelis_ros.policy.export_onnx import ExportConfig, export_onnx

    manifest = export_onnx(args.model, args.out, ExportConfig(opset=args.opset, adapter=args.adapter, lora=args.lora))
    out = {"out": args.out, "arch": manifest["arch"], "opset": manifest["opset"],
           "files": {role: entry["path"] for role, entry in manifest["files"].items()},
           "config_sha256": manifest["source"]["config_sha256"], "lora": manifest["source"]["lora"]}
    if manifest["lora"]["mode"] == "adapters":
        out["adapter_file"] = manifest["lora"]["adapter_file"]
        out["lora_rank"] = manifest["lora"]["rank"]
    return out


def cmd_export_adapter(args) -> dict:
    from pixelis_ros.policy.onnx_lora import convert_adapter

    return convert_adapter(args.onnx, args.adapter, args.out)


def cmd_export_trt(args) -> dict:
    from pixelis_ros.policy.tensorrt import TrtOptions, build_engines

    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    return build_engines(args.onnx, TrtOptions(precision=precision, cache_dir=args.cache))


def add_export_commands(sub) -> None:
    export = sub.add_parser("export", help="export a model: ONNX graphs, TensorRT engines").add_subparsers(
        dest="export", required=True)
    p = export.add_parser("onnx", help="vision + decoder (KV cache) ONNX graphs of a Qwen-VL folder",
                          description="Write OUT/vision.onnx, OUT/decoder.onnx, the tokenizer/processor/config files "
                                      "and OUT/manifest.json (what the onnx/tensorrt backends check before loading).")
    p.add_argument("--model", required=True, help="a local Qwen2.5-VL / Qwen3-VL model folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--adapter", help="a peft LoRA adapter folder (merged into the weights, or see --lora)")
    p.add_argument("--lora", choices=["merged", "adapters"], default="merged",
                   help="merged (default): fold --adapter into the weights; adapters: the decoder takes the LoRA "
                        "matrices as inputs and OUT/adapter.onnx_adapter holds them (swap adapters without re-export)")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_export_onnx)

    p = export.add_parser("adapter", help="a peft LoRA folder -> an ONNX Runtime adapter file for an ONNX folder",
                          description="Convert an (updated) peft LoRA adapter into an ONNX Runtime adapter file for a "
                                      "folder exported with `--lora adapters`; the policy swaps it in without re-export "
                                      "(onnx backend option adapter=FILE, or OnnxPolicy.load_adapter).")
    p.add_argument("--onnx", required=True, help="a folder written by `pixelis export onnx --lora adapters`")
    p.add_argument("--adapter", required=True, help="a peft LoRA adapter folder (same rank and target modules)")
    p.add_argument("--out", required=True, help="the adapter file to write (e.g. step42.onnx_adapter)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_export_adapter)

    p = export.add_parser("trt", help="build (or reuse) TensorRT engines for an ONNX folder",
                          description="Build TensorRT engines through ONNX Runtime's TensorRT EP into a cache keyed by "
                                      "TensorRT version, GPU and precision; a filled cache is reused, never rebuilt. "
                                      "Exit status 2 where TensorRT or a GPU is absent.")
    p.add_argument("--onnx", required=True, help="a folder written by `pixelis export onnx`")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="fp16 engines")
    precision.add_argument("--int8", action="store_true", help="int8 engines (fp16 fallback)")
    p.add_argument("--cache", help="engine cache root (default ONNX_DIR/trt_cache)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_export_trt)

