"""OnnxPolicy: the Policy protocol on ONNX Runtime, from a folder written by ``pixelis export onnx``.

One turn: the processor (loaded from the ONNX folder) renders the chat and the images, the vision
graph embeds the images, and the decoder graph runs prefill then one step per token with its KV
cache, stopping at ``</tool_call>``, ``</answer>`` or the end-of-turn token. Greedy by default
(parity with the PyTorch backend is a test); temperature/top-p sampling for RL.

Execution providers are tried in the order TensorRT EP -> CUDA EP -> CPU EP, keeping those this
onnxruntime build offers; ``providers`` overrides the list. The KV cache stays in ONNX Runtime's
own buffers between steps (``OrtValue`` outputs fed back as inputs), so a decode step copies no
cache through numpy.

Auxiliary heads (check/refine) run in numpy (``heads_numpy``) on the decoder's
``last_hidden_state`` output, as HFPolicy runs them on its hidden states: no torch on this path.

LoRA: a folder exported with ``--lora adapters`` takes the adapter's matrices as decoder inputs
(``onnx_lora``). ``load_adapter`` / ``set_adapter`` mirror HFPolicy: ONNX Runtime adapter files (or
peft folders, converted on load) are memory-mapped once and activated per run through
``RunOptions.add_active_adapter``; with none active the inputs keep their exported defaults,
zeros, i.e. the base model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np

from pixelis_ros.policy.base import Generation, PolicyError
from pixelis_ros.policy.coords import ResizeRule
from pixelis_ros.policy.heads_numpy import heads_verdict, load_numpy_heads
from pixelis_ros.policy.profile import load_profile
from pixelis_ros.policy.prompt import model_prompt
from pixelis_ros.policy.slim_processor import load_processor
from pixelis_ros.policy.stopping import STOP_STRINGS, StopRule
from pixelis_ros.policy.onnx_folder import check_onnx_folder, check_session_io
from pixelis_ros.policy.onnx_inputs import VisionSpec, rope_positions, vision_inputs
from pixelis_ros.policy.turn import check_heads_mode, check_options, finish_turn, ground_call, heads_target

HIDDEN_OUTPUT = "last_hidden_state"
"""Decoder output: the final-norm hidden state of every input position (the auxiliary heads' input)."""
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass
class OnnxOptions:
    """Options of ``load_onnx_policy`` (every key of ``**options``)."""

    providers: list | None = None
    """Execution providers in preference order (names or ``(name, options)`` pairs); ``None``: TensorRT ->
    CUDA -> CPU, keeping those available."""
    max_new_tokens: int = 256
    """Cap on generated tokens per turn."""
    temperature: float = 0.0
    """0 decodes greedily; above 0 samples from softmax(logits / temperature)."""
    top_p: float = 1.0
    """Nucleus sampling mass (with temperature > 0)."""
    seed: int | None = None
    """Seed of the sampler (``None``: from the OS)."""
    logprobs: bool = False
    """Return the log-probability of every generated token (RL, test-time RL)."""
    intra_op_threads: int = 0
    """ONNX Runtime threads per op; 0 lets ONNX Runtime pick (one per physical core). Decoding a
    tiny or small model is latency-bound: on the 2-core development machine 1 thread decoded the
    small preset at ~1000 tokens/s against ~620 with 2."""
    graph_optimization: str = "all"
    """ONNX Runtime graph optimisation level: disable, basic, extended or all."""
    ignore_stop: bool = False
    """Generate exactly ``max_new_tokens`` (benchmarks): end-of-turn and stop strings do not stop."""
    provider_options: dict = field(default_factory=dict)
    """Extra options per provider name, merged into the defaults (e.g. TensorRT's engine cache)."""
    heads: str = "auto"
    """Auxiliary heads (numpy, from ``heads.safetensors``): ``off``, ``check`` (flag calls whose box
    disagrees), ``refine`` (execute the heads' box; the generated one stays in ``raw_text``) or
    ``auto`` (the mode the folder's prompt profile names)."""
    heads_path: str | None = None
    """Folder of heads.safetensors; default: the ONNX folder (the export copies the model's heads)."""
    heads_min_iou: float = 0.5
    """In check mode, a call whose box has IoU below this with the heads' box is flagged."""
    adapter: str | None = "default"
    """LoRA adapter activated on load (``--lora adapters`` exports only): ``default`` (the adapter
    exported with the folder), an ``.onnx_adapter`` file or a peft folder, or ``None`` (base model)."""


def choose_providers(requested: list | None, extra: dict | None = None) -> list:
    """Providers for ``InferenceSession``: the requested (or default-ordered) ones this build has."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    extra = extra or {}
    if requested is None:
        names = [p for p in PROVIDER_ORDER if p in available]
        return [(n, extra[n]) if n in extra else n for n in names]
    chosen = []
    for p in requested:
        name = p[0] if isinstance(p, (tuple, list)) else p
        if name not in available:
            raise PolicyError(f"execution provider {name} is not available in this onnxruntime build "
                              f"(available: {', '.join(available)}); install onnxruntime-gpu for CUDA/TensorRT")
        opts = {**extra.get(name, {}), **(p[1] if isinstance(p, (tuple, list)) else {})}
        chosen.append((name, opts) if opts else name)
    return chosen


def session_options(options: OnnxOptions):
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if options.graph_optimization not in levels:
        raise PolicyError(f"graph_optimization must be one of {', '.join(levels)}, got {options.graph_optimization!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[options.graph_optimization]
    so.intra_op_num_threads = options.intra_op_threads
    so.log_severity_level = 3  # TensorRT/CUDA EPs warn about every node they leave to the CPU
    return so


class OnnxPolicy:
    """Vision + decoder ONNX graphs behind the Policy protocol."""

    name = "onnx"

    def __init__(self, folder: Path, options: OnnxOptions, provider_options: dict | None = None,
                 role_provider_options: dict | None = None):
        """``provider_options``: {provider: options} for both graphs; ``role_provider_options``:
        {"vision"|"decoder": {provider: options}} on top (TensorRT's per-graph shape profiles)."""
        import onnxruntime as ort

        self.folder = Path(folder)
        self.profile = load_profile(self.folder)
        if options.heads == "auto":
            options = replace(options, heads=self.profile.heads)
        self.options = options
        self.manifest = check_onnx_folder(self.folder)
        self.spec = VisionSpec(**self.manifest["vision"])
        self.text = self.manifest["text"]
        common = {**(provider_options or {}), **options.provider_options}
        self.providers = choose_providers(options.providers, common)
        so = session_options(options)
        self.sessions = {}
        for role in ("vision", "decoder"):
            path = self.folder / self.manifest["files"][role]["path"]
            per_role = (role_provider_options or {}).get(role, {})
            extra = {name: {**common.get(name, {}), **per_role.get(name, {})} for name in {*common, *per_role}}
            try:
                self.sessions[role] = ort.InferenceSession(str(path), so,
                                                           providers=choose_providers(options.providers, extra))
            except Exception as e:  # ORT raises its own exception types per failure
                raise PolicyError(f"{path}: ONNX Runtime cannot load it ({e}); re-export it with "
                                  f"`pixelis export onnx --model MODEL_DIR --out {self.folder}`") from None
            check_session_io(self.folder, role, self.sessions[role], self.manifest)
        self.processor = load_processor(self.folder)
        tok = self.processor.tokenizer
        self.tokenizer = tok
        eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"), tok.eos_token_id]
        self.eos_ids = tuple(dict.fromkeys(i for i in eos if isinstance(i, int) and i >= 0))
        self.stop = StopRule(tok, self.eos_ids, STOP_STRINGS)
        self.resize = ResizeRule.of(self.processor.image_processor)
        self.rng = np.random.default_rng(options.seed)
        self._init_lora()
        check_heads_mode(options.heads)
        self.heads = None
        if options.heads != "off":
            self.heads = load_numpy_heads(options.heads_path or self.folder, self.text["hidden_size"])
        self.device = "cuda" if any((p[0] if isinstance(p, tuple) else p) != "CPUExecutionProvider"
                                    for p in self.providers) else "cpu"

    # -- LoRA adapters --------------------------------------------------------------------------
    def _init_lora(self) -> None:
        self.lora_spec = self.manifest.get("lora") if (self.manifest.get("lora") or {}).get("mode") == "adapters" else None
        self._adapters: dict = {}  # name -> onnxruntime.LoraAdapter
        self.adapter_files: dict[str, Path] = {}
        self.active_adapter: str | None = None
        if self.lora_spec is None:
            return
        self._load_adapter_file(self.folder / self.lora_spec["adapter_file"], "default")
        choice = self.options.adapter
        if choice == "default":
            self.set_adapter("default")
        elif choice is not None:
            self.load_adapter(choice)

    def _load_adapter_file(self, path: Path, name: str) -> str:
        import onnxruntime as ort

        from pixelis_ros.policy.onnx_lora import check_ort_adapter

        check_ort_adapter(path, self.lora_spec, self.folder)
        adapter = ort.LoraAdapter()
        adapter.Load(str(path))
        self._adapters[name] = adapter
        self.adapter_files[name] = path
        return name

    def load_adapter(self, path: str | Path, name: str | None = None) -> str:
        """Load an ONNX Runtime adapter file (``pixelis export adapter``) or a peft adapter folder
        (converted into a temporary adapter file) under ``name`` (default: the file/folder stem)
        and activate it; no graph is re-exported or reloaded."""
        import tempfile

        from pixelis_ros.policy.onnx_lora import adapter_spec, convert_adapter

        adapter_spec(self.manifest, self.folder)  # a merged export: says how to re-export
        path = Path(path)
        name = name or path.stem
        if path.is_dir():
            if not hasattr(self, "_tmp"):
                self._tmp = tempfile.TemporaryDirectory(prefix="pixelis-adapters-")  # removed with the policy
            converted = Path(self._tmp.name) / f"{len(self.adapter_files)}-{name}.onnx_adapter"
            convert_adapter(self.folder, path, converted)
            path = converted
        self._load_adapter_file(path, name)
        self.set_adapter(name)
        return name

    def set_adapter(self, name: str | None) -> None:
        """Activate a loaded adapter; ``None`` runs the base model."""
        if name is not None and name not in self._adapters:
            raise PolicyError(f"no adapter {name!r} loaded; loaded: {self.adapters()}")
        self.active_adapter = name

    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    def _run_options(self):
        import onnxruntime as ort

        run_options = ort.RunOptions()
        if self.active_adapter is not None:
            run_options.add_active_adapter(self._adapters[self.active_adapter])
        return run_options

    # -- graphs -------------------------------------------------------------------------------
    def embed_images(self, enc: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        hidden = self.text["hidden_size"]
        if "pixel_values" not in enc:
            deep = np.zeros((self.text["deepstack_layers"], 0, hidden), np.float32) if self.spec.arch == "qwen3_vl" else None
            return np.zeros((0, hidden), np.float32), deep
        outs = self.sessions["vision"].run(None, vision_inputs(enc["pixel_values"], enc["image_grid_thw"], self.spec))
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def _empty_past(self) -> dict[str, np.ndarray]:
        t = self.text
        shape = (1, t["num_kv_heads"], 0, t["head_dim"])
        return {f"past_key_values.{i}.{k}": np.zeros(shape, np.float32) for i in range(t["num_layers"]) for k in ("key", "value")}

    def _pick(self, logits: np.ndarray) -> tuple[int, float]:
        logits = logits.astype(np.float64)
        if self.options.temperature > 0:
            z = logits / self.options.temperature
            p = np.exp(z - z.max())
            p /= p.sum()
            if self.options.top_p < 1.0:
                order = np.argsort(-p)
                keep = order[: int(np.searchsorted(np.cumsum(p[order]), self.options.top_p)) + 1]
                q = np.zeros_like(p)
                q[keep] = p[keep]
                p = q / q.sum()
            token = int(self.rng.choice(len(p), p=p))
        else:
            token = int(np.argmax(logits))
        logprob = float(logits[token] - logits.max() - np.log(np.exp(logits - logits.max()).sum()))
        return token, logprob

    def decode(self, enc: dict[str, np.ndarray], on_token=None, hidden: list | None = None) -> tuple[list[int], list[float]]:
        """Generated token ids and their log-probabilities; ``on_token(i)`` is called after each token.
        ``hidden``: a list that receives the last-layer hidden states ``[n, H]`` of the prompt and of
        every generated token (the auxiliary heads read them); needs an export with that output."""
        import onnxruntime as ort

        session = self.sessions["decoder"]
        image_rows, deepstack = self.embed_images(enc)
        ids = enc["input_ids"].astype(np.int64)
        grid = enc.get("image_grid_thw", np.zeros((0, 3), np.int64))
        positions, delta = rope_positions(ids, self.text["image_token_id"], grid, self.spec.spatial_merge_size)
        feeds = {"input_ids": ids, "image_embeds": image_rows, "position_ids": positions,
                 "attention_mask": np.ones((1, ids.shape[1]), np.int64), **self._empty_past()}
        if deepstack is not None:
            feeds["deepstack_embeds"] = deepstack
        no_rows = np.zeros((0, self.text["hidden_size"]), np.float32)
        no_deep = None if deepstack is None else np.zeros((deepstack.shape[0], 0, deepstack.shape[2]), np.float32)
        feeds = {k: ort.OrtValue.ortvalue_from_numpy(v) for k, v in feeds.items()}
        all_outputs = [o.name for o in session.get_outputs()]
        if hidden is not None and HIDDEN_OUTPUT not in all_outputs:
            raise PolicyError(f"{self.folder / 'decoder.onnx'} has no {HIDDEN_OUTPUT} output (exported before the "
                              f"heads ran on ONNX); re-export it with `pixelis export onnx --model MODEL_DIR --out "
                              f"{self.folder}` or set heads='off'")
        # fetch the hidden states only when asked: the copy out of ONNX Runtime is the cost
        output_names = [n for n in all_outputs if n != HIDDEN_OUTPUT or hidden is not None]
        run_options = self._run_options()
        tokens: list[int] = []
        logprobs: list[float] = []
        length = ids.shape[1]
        for _ in range(self.options.max_new_tokens):
            outs = session.run_with_ort_values(output_names, feeds, run_options)
            if hidden is not None:
                hidden.append(outs[-1].numpy()[0])
            token, logprob = self._pick(outs[0].numpy()[0, -1])
            tokens.append(token)
            logprobs.append(logprob)
            if on_token is not None:
                on_token(len(tokens))
            length += 1
            feeds = {name.replace("present", "past_key_values"): value for name, value in zip(output_names, outs)
                     if name.startswith("present")}
            feeds["input_ids"] = ort.OrtValue.ortvalue_from_numpy(np.array([[token]], np.int64))
            feeds["image_embeds"] = ort.OrtValue.ortvalue_from_numpy(no_rows)
            feeds["position_ids"] = ort.OrtValue.ortvalue_from_numpy(np.full((3, 1, 1), length - 1 + delta, np.int64))
            feeds["attention_mask"] = ort.OrtValue.ortvalue_from_numpy(np.ones((1, length), np.int64))
            if no_deep is not None:
                feeds["deepstack_embeds"] = ort.OrtValue.ortvalue_from_numpy(no_deep)
            if not self.options.ignore_stop and self._stopped(tokens):
                break
        if hidden is not None and tokens:  # the last token's own state: its step never ran
            hidden.append(session.run_with_ort_values([HIDDEN_OUTPUT], feeds, run_options)[0].numpy()[0])
        return tokens, logprobs

    def _stopped(self, tokens: list[int]) -> bool:
        return self.stop.done(tokens)

    def generate(self, messages: list[dict], images: dict[str, np.ndarray]) -> Generation:
        """The next turn. Coordinates go through the backbone's convention both ways (policy.coords),
        as in HFPolicy: the model sees and writes its own convention, the agent gets internal pixels."""
        enc, refs, geometries = model_prompt(self.processor, self.spec.arch, self.resize, messages, images,
                                             profile=self.profile)
        hidden = [] if self.heads is not None else None
        tokens, logprobs = self.decode(enc, hidden=hidden)
        gen = finish_turn(self.stop, self.eos_ids, self.tokenizer, tokens, logprobs if self.options.logprobs else None)
        verdict = None if self.heads is None else partial(self._heads_verdict, enc, refs, gen.token_ids, hidden,
                                                          geometries)
        return ground_call(gen, geometries, self.options.heads, verdict)

    def _heads_verdict(self, enc, refs, token_ids, hidden, geometries, ref, arguments) -> dict:
        """As HFPolicy._heads_verdict, on the decoder's hidden-state output and the numpy heads."""
        target = heads_target(self.tokenizer, token_ids, refs, ref, geometries)
        if isinstance(target, dict):
            return target
        g, position = target
        states = np.concatenate(hidden, axis=0)  # prompt rows, then one per generated token
        prompt_len = enc["input_ids"].shape[1]
        image_index = len(refs) - 1 - refs[::-1].index(ref)
        grid, merge = enc["image_grid_thw"], self.spec.spatial_merge_size
        rows, cols = int(grid[image_index][1]) // merge, int(grid[image_index][2]) // merge
        token_positions = np.nonzero(enc["input_ids"][0] == self.text["image_token_id"])[0]
        start = sum(int(t[1] * t[2]) // merge ** 2 for t in grid[:image_index])
        keys = states[token_positions[start:start + rows * cols]]
        pred = self.heads(states[prompt_len + position], keys, rows, cols)
        return heads_verdict(pred, self.options.heads, ref, g.width, g.height, arguments, self.options.heads_min_iou)


def load_onnx_policy(model_dir: str | Path, **options) -> OnnxPolicy:
    """The ``onnx`` backend: an ONNX folder (``pixelis export onnx``) on ONNX Runtime."""
    return OnnxPolicy(Path(model_dir), check_options(OnnxOptions, options, "onnx"))
