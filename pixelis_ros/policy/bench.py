"""``pixelis bench policy``: decode speed, time to first token and peak memory, torch vs ONNX Runtime.

Each (backend, preset) runs in its own subprocess so peak RSS belongs to one backend. The
models are the builder's random-weight presets (exported to ONNX in a temporary folder): speed
does not depend on what the weights learned. Every run generates exactly ``new_tokens`` tokens
(end-of-turn and stop strings are ignored: random weights would stop at random places) for one
448x448 image, which the preset's processor resizes to its own input size.

Timing: from the encoded prompt (processor excluded, vision tower included) to each generated
token. ``ttft_ms`` is the time to the first token (vision + prefill), ``decode_tokens_per_s`` is
(tokens - 1) / (last - first token time). Medians over ``repeats`` runs after one warm-up run.
torch eager is transformers' ``generate`` (greedy, KV cache), the reference the ONNX runtime
must match token for token. Both run one thread by default: at these sizes decoding is
latency-bound and extra threads cost more in synchronisation than they win (on the 2-core
machine, small preset: torch 247 vs 223 tokens/s, ONNX Runtime 999 vs 618, 1 vs 2 threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pixelis_ros.progress import progress as progress_bar

MESSAGES = [{"role": "user", "content": [{"type": "image", "image": "frame:-1"},
                                         {"type": "text", "text": "Read the sign on the red square."}]}]


def _image() -> np.ndarray:
    return (np.random.default_rng(0).random((448, 448, 3)) * 255).astype(np.uint8)


def _peak_rss_mb() -> float:
    """This process's peak resident set. Not getrusage's ru_maxrss: Linux carries that over from the
    parent across fork+exec, so every worker would report the (larger) parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _summary(runs: list[list[float]]) -> tuple[float, float]:
    ttft = statistics.median(r[0] for r in runs) * 1000.0
    rate = statistics.median((len(r) - 1) / (r[-1] - r[0]) for r in runs)
    return rate, ttft


def run_torch(model_dir: Path, new_tokens: int, repeats: int, device: str) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.generation.streamers import BaseStreamer

    from pixelis_ros.policy.prompt import encode_prompt

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32).eval().to(device)
    enc = {k: torch.from_numpy(v).to(device) for k, v in encode_prompt(processor, MESSAGES, {"frame:-1": _image()}).items()}

    class Clock(BaseStreamer):  # generate() calls put() with the prompt, then once per new token
        def __init__(self, start):
            self.start, self.times, self.prompt_seen = start, [], False

        def put(self, value):
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            if device != "cpu":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

        def end(self):
            pass

    runs = []
    for i in range(repeats + 1):
        clock = Clock(time.perf_counter())
        with torch.no_grad():
            model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                           eos_token_id=None, streamer=clock)
        if i:  # the first run warms up
            runs.append(clock.times)
    return {"runs": runs}


def run_onnx(onnx_dir: Path, new_tokens: int, repeats: int, providers: list[str], threads: int) -> dict:
    from pixelis_ros.policy.onnx import load_onnx_policy
    from pixelis_ros.policy.prompt import encode_prompt

    policy = load_onnx_policy(onnx_dir, providers=providers, max_new_tokens=new_tokens, ignore_stop=True,
                              intra_op_threads=threads)
    enc = encode_prompt(policy.processor, MESSAGES, {"frame:-1": _image()})
    runs = []
    for i in range(repeats + 1):
        start, times = time.perf_counter(), []
        policy.decode(enc, on_token=lambda _n: times.append(time.perf_counter() - start))
        if i:
            runs.append(times)
    return {"runs": runs}


def worker(args) -> dict:
    """One backend on one model in this process; prints its row."""
    if args.backend.startswith("torch"):
        import torch

        torch.set_num_threads(args.threads or os.cpu_count() or 1)
        out = run_torch(Path(args.model), args.new_tokens, args.repeats, "cuda" if args.backend == "torch-cuda" else "cpu")
    else:
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.backend == "onnx-cuda" else ["CPUExecutionProvider"]
        out = run_onnx(Path(args.onnx), args.new_tokens, args.repeats, providers, args.threads)
    rate, ttft = _summary(out["runs"])
    return {"decode_tokens_per_s": round(rate, 1), "ttft_ms": round(ttft, 2), "peak_rss_mb": round(_peak_rss_mb(), 1),
            "tokens": len(out["runs"][0]), "runs": len(out["runs"])}


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def backends_here() -> list[str]:
    import onnxruntime as ort

    names = ["torch", "onnx"]
    if gpu_name() and "CUDAExecutionProvider" in ort.get_available_providers():
        names.append("onnx-cuda")
    try:
        import torch

        if torch.cuda.is_available():
            names.append("torch-cuda")
    except ImportError:
        pass
    return names


def _spawn(backend: str, model: Path, onnx: Path, new_tokens: int, repeats: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "pixelis_ros.policy.bench", "--backend", backend, "--model", str(model), "--onnx",
           str(onnx), "--new-tokens", str(new_tokens), "--repeats", str(repeats), "--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                      os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"bench worker {backend} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_policy(arch: str = "qwen2_5_vl", presets: tuple[str, ...] = ("tiny", "small"), new_tokens: int = 64,
                 repeats: int = 5, threads: int = 1, backends: list[str] | None = None) -> dict:
    from pixelis_ros.policy.builder import build_model
    from pixelis_ros.policy.export_onnx import export_onnx

    backends = backends or backends_here()
    rows = []
    bar = progress_bar(total=len(presets) * len(backends), desc="bench policy", unit="run")
    with tempfile.TemporaryDirectory(prefix="pixelis-bench-") as tmp:
        for preset in presets:
            model = Path(tmp) / f"{arch}-{preset}"
            build_model(arch, preset, model)
            export_onnx(model, model.with_name(model.name + "-onnx"))
            for backend in backends:
                row = _spawn(backend, model, model.with_name(model.name + "-onnx"), new_tokens, repeats, threads)
                rows.append({"backend": backend, "preset": preset, **row})
                bar.update(1)
    bar.close()
    ratios = {}
    for row in rows:
        base = next(r for r in rows if r["preset"] == row["preset"] and r["backend"] == "torch")
        ratios[f"{row['backend']}/{row['preset']}"] = {
            "decode_vs_torch": round(row["decode_tokens_per_s"] / base["decode_tokens_per_s"], 2),
            "ttft_vs_torch": round(row["ttft_ms"] / base["ttft_ms"], 2)}
    import onnxruntime
    import torch

    return {"rows": rows, "ratios": ratios, "arch": arch, "new_tokens": new_tokens, "repeats": repeats,
            "image": "448x448 RGB (resized by each preset's processor)", "stop": "ignored (exactly new_tokens generated)",
            "rss_note": "the onnx worker imports transformers (and so torch) for the processor; its RSS includes them",
            "gpu": gpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def main() -> None:
    p = argparse.ArgumentParser(description="bench worker: one backend, one model (used by bench_policy)")
    p.add_argument("--backend", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    print(json.dumps(worker(p.parse_args())))


if __name__ == "__main__":
    main()
