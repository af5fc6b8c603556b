"""Fuzz target ``model``: broken model folders through the node's start-up (``build_policy``).

The base is a tiny random-weight Qwen3-VL folder built by ``pixelis model build`` (in a separate
process, so the worker's peak RSS is the loading's, not the building's). Each case copies it and
breaks one or two files the way checkpoints arrive broken: config.json (sizes far too large —
100,000 layers —, wrong types, invalid or not UTF-8, deep nesting), the tokenizer files
(truncated, invalid JSON, vocabulary and embedding sizes that disagree), the preprocessor config
(zero patch sizes), model.safetensors (truncated, random, a header length or offsets that lie,
shapes that do not match), a weight index (malformed, shards outside the folder), and weights
that are a symlink to a file outside the folder. The node's ``ConfigError`` is the only error
allowed out; a folder that reaches outside itself must be refused, not loaded.
"""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from pixelis_ros.fuzz import mutate
from pixelis_ros.fuzz.target import Case, Escaped, Target, short
from pixelis_ros.node.config import ConfigError

OUTSIDE = "outside"  # kinds whose folder points outside itself: loading them is a failure


def _set(d: dict, path: str, value) -> dict:
    keys = path.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {}) if isinstance(d.get(k, {}), dict) else {}
    d[keys[-1]] = value
    return d


def _config_mutation(rng: random.Random, text: str) -> tuple[str, bytes]:
    kind = rng.choice(("size", "type", "invalid", "not_utf8", "deep", "list", "arch"))
    config = json.loads(text)
    if kind == "size":
        key = rng.choice(("text_config.num_hidden_layers", "text_config.hidden_size", "text_config.vocab_size",
                          "text_config.intermediate_size", "text_config.num_attention_heads", "vision_config.depth",
                          "vision_config.hidden_size", "text_config.max_position_embeddings", "text_config.head_dim"))
        _set(config, key, rng.choice((100_000, 10**9, 2**63, 0, -1, 3)))
        return f"config_{key.split('.')[-1]}", json.dumps(config).encode()
    if kind == "type":
        key = rng.choice(("text_config.num_hidden_layers", "text_config.rope_parameters", "vision_config", "text_config",
                          "dtype", "image_token_id", "text_config.rope_parameters.mrope_section"))
        _set(config, key, rng.choice(("12", None, [], {}, "bfloat99", 1.5, True)))
        return "config_type", json.dumps(config).encode()
    if kind == "invalid":
        return "config_invalid", text.encode()[: rng.randrange(len(text))]
    if kind == "not_utf8":
        return "config_not_utf8", text.encode("utf-16")
    if kind == "deep":
        d = rng.choice((1000, 100_000))
        return "config_deep", ('{"model_type": "qwen3_vl", "x": ' + "[" * d + "]" * d + "}").encode()
    if kind == "list":
        return "config_list", json.dumps([config]).encode()
    config["model_type"] = rng.choice(("qwen2_5_vl", "llama", "", "qwen3_vl\u200b"))
    return "config_arch", json.dumps(config).encode()


def _tokenizer_mutation(rng: random.Random, files: dict[str, bytes]) -> tuple[str, dict[str, bytes]]:
    kind = rng.choice(("truncate", "bytes", "vocab", "added", "model_type", "config", "template"))
    tok = json.loads(files["tokenizer.json"])
    if kind == "truncate":
        return "tokenizer_truncated", {"tokenizer.json": mutate.truncate(rng, files["tokenizer.json"])}
    if kind == "bytes":
        how, data = mutate.mutate_bytes(rng, files["tokenizer.json"])
        return "tokenizer_" + how.split("+")[0], {"tokenizer.json": data}
    if kind == "vocab":  # ids beyond the embedding, or a vocabulary far larger than it
        vocab = tok["model"]["vocab"]
        if rng.random() < 0.5:
            for i in range(rng.choice((10, 5000))):
                vocab[f"zz{i}"] = 10**6 + i
        else:
            vocab.update({k: v + 2**31 for k, v in list(vocab.items())[:5]})
        return "tokenizer_size_mismatch", {"tokenizer.json": json.dumps(tok).encode()}
    if kind == "added":
        tok["added_tokens"] = [{"id": 10**7, "content": "<tool_call>", "special": True}] + rng.choice(([], tok["added_tokens"]))
        return "tokenizer_added_ids", {"tokenizer.json": json.dumps(tok).encode()}
    if kind == "model_type":
        tok["model"]["type"] = rng.choice(("Unigram", "WordPiece", "nonsense", None))
        return "tokenizer_model_type", {"tokenizer.json": json.dumps(tok).encode()}
    if kind == "config":
        data = rng.choice((b"{", b"[]", "{\"model_max_length\": 1e309}".encode(), files["tokenizer_config.json"].decode().encode("utf-16")))
        return "tokenizer_config_bad", {"tokenizer_config.json": data}
    return "chat_template_bad", {"chat_template.jinja": rng.choice((b"{% for %}", b"{{ " * 5000, b"\xff\xfe\x00", b""))}


def _processor_mutation(rng: random.Random, text: str) -> tuple[str, bytes]:
    proc = json.loads(text)
    image = proc.get("image_processor", proc)
    key = rng.choice(("patch_size", "merge_size", "temporal_patch_size", "max_pixels", "min_pixels", "size"))
    image[key] = rng.choice((0, -1, 10**12, "16", None, {"longest_edge": 0}))
    return f"processor_{key}", json.dumps(proc).encode()


def _weights_mutation(rng: random.Random, weights: bytes) -> tuple[str, bytes]:
    n = struct.unpack("<Q", weights[:8])[0]
    header = json.loads(weights[8:8 + n])
    kind = rng.choice(("truncate", "random", "header_length", "offsets", "shape", "dtype", "header_invalid", "bytes"))
    if kind == "truncate":
        return "weights_truncated", weights[: rng.choice((0, 4, 8, 8 + n // 2, 8 + n, len(weights) // 2, len(weights) - 1))]
    if kind == "random":
        return "weights_random", mutate.random_bytes(rng, rng.choice((16, 4096, len(weights))))
    if kind == "header_length":
        return "weights_header_length", struct.pack("<Q", rng.choice((2**63, 2**32, n + 10**6, 0, 1))) + weights[8:]
    name = rng.choice(sorted(k for k in header if k != "__metadata__"))
    if kind == "offsets":
        header[name]["data_offsets"] = rng.choice(([0, 2**40], [10**6, 0], [0, 1], [-1, 4]))
    elif kind == "shape":
        header[name]["shape"] = rng.choice(([1], [2**20, 2**20], [], [0, 5], [-1]))
    elif kind == "dtype":
        header[name]["dtype"] = rng.choice(("F99", "BOOL", "", "F8_E4M3"))
    elif kind == "header_invalid":
        body = b"{" + b'"a":' * 50 + b"[" * 10_000
        return "weights_header_invalid", struct.pack("<Q", len(body)) + body + weights[8 + n:]
    else:
        how, data = mutate.mutate_bytes(rng, weights)
        return "weights_" + how.split("+")[0], data
    body = json.dumps(header).encode()
    return f"weights_{kind}", struct.pack("<Q", len(body)) + body + weights[8 + n:]


def _index_mutation(rng: random.Random, weights: bytes) -> tuple[str, dict]:
    n = struct.unpack("<Q", weights[:8])[0]
    names = [k for k in json.loads(weights[8:8 + n]) if k != "__metadata__"]
    kind = rng.choice(("outside", "absolute", "types", "invalid", "missing", "huge"))
    index = {"metadata": {"total_size": len(weights)}, "weight_map": {k: "model.safetensors" for k in names}}
    if kind in ("outside", "absolute"):
        shard = "../outside/model.safetensors" if kind == "outside" else "/tmp/pixelis-fuzz-absent/model.safetensors"
        index["weight_map"][names[0]] = shard
        return f"index_{OUTSIDE}_{kind}", {"index": json.dumps(index).encode(), "move_weights": True}
    if kind == "types":
        index["weight_map"] = rng.choice(([1, 2], "model.safetensors", {names[0]: 7}, {names[0]: None}, None))
    elif kind == "invalid":
        return "index_invalid", {"index": json.dumps(index).encode()[:50]}
    elif kind == "missing":
        index["weight_map"][names[0]] = "model-00002-of-00002.safetensors"
    else:
        index["weight_map"] = {f"w{i}": "x" * 300 + str(i) for i in range(20000)}
    return f"index_{kind}", {"index": json.dumps(index).encode()}


class ModelTarget(Target):
    name = "model"
    domain_errors = (ConfigError,)

    def setup(self, workdir: Path) -> None:
        self.workdir = workdir
        self.base = workdir / "base"
        if not (self.base / "model.safetensors").is_file():  # a worker after a hang or crash reuses the base
            shutil.rmtree(self.base, ignore_errors=True)
            code = f"from pixelis_ros.policy.builder import build_model; build_model('qwen3_vl', 'tiny', {str(self.base)!r})"
            built = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
            if built.returncode != 0:
                raise RuntimeError(f"building the tiny base model failed:\n{built.stderr[-3000:]}")
        self.files = {p.name: p.read_bytes() for p in self.base.iterdir() if p.is_file()}
        from pixelis_ros.node.agent_core import build_policy  # torch and transformers, imported once per worker
        from pixelis_ros.node.config import AgentNodeConfig

        self.build_policy, self.config = build_policy, AgentNodeConfig
        self.build_policy(AgentNodeConfig(model=str(self.base)))  # the valid base must load

    def make(self, rng: random.Random) -> Case:
        kinds, changes, extra = [], {}, {}
        for _ in range(rng.choice((1, 1, 2))):
            part = rng.choices(("config", "tokenizer", "processor", "weights", "index", "symlink"), (0.25, 0.2, 0.1, 0.25, 0.12, 0.08))[0]
            if part == "config":
                kind, changes["config.json"] = _config_mutation(rng, self.files["config.json"].decode())
            elif part == "tokenizer":
                kind, files = _tokenizer_mutation(rng, self.files)
                changes.update(files)
            elif part == "processor":
                kind, changes["processor_config.json"] = _processor_mutation(rng, self.files["processor_config.json"].decode())
            elif part == "weights":
                kind, changes["model.safetensors"] = _weights_mutation(rng, self.files["model.safetensors"])
            elif part == "index":
                kind, extra = _index_mutation(rng, self.files["model.safetensors"])
            else:
                kind, extra = f"weights_symlink_{OUTSIDE}", {"symlink": True}
            kinds.append(kind)
        summary = " ".join(f"{name}={short(data, 70)}" for name, data in changes.items()) + (f" {sorted(extra)}" if extra else "")
        return Case("+".join(kinds), summary, {"changes": changes, "extra": extra, "kinds": kinds})

    def run(self, case: Case) -> list[str]:
        d = case.data
        folder = self.workdir / "case" / "model"
        outside = self.workdir / "case" / "outside"
        shutil.rmtree(folder.parent, ignore_errors=True)
        shutil.copytree(self.base, folder)
        for name, data in d["changes"].items():
            (folder / name).write_bytes(data)
        extra = d["extra"]
        if "index" in extra:
            (folder / "model.safetensors.index.json").write_bytes(extra["index"])
            if extra.get("move_weights"):  # the shard the index names outside the folder really exists
                outside.mkdir(parents=True)
                shutil.copy(folder / "model.safetensors", outside / "model.safetensors")
        if extra.get("symlink"):
            outside.mkdir(parents=True, exist_ok=True)
            shutil.move(folder / "model.safetensors", outside / "model.safetensors")
            (folder / "model.safetensors").symlink_to(outside / "model.safetensors")
        self.build_policy(self.config(model=str(folder)))
        if any(OUTSIDE in k for k in d["kinds"]):
            raise Escaped("a model folder whose weights lie outside it was loaded instead of refused")
        return []
