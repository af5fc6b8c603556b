"""The torch backend: any local Qwen2.5-VL / Qwen3-VL folder through transformers, LoRA via peft.

``load_hf_policy(DIR)`` (registered as backend ``torch``) checks the folder, loads config,
safetensors weights, tokenizer and processor with ``local_files_only``, and returns an
``HFPolicy``. Sizes come from the folder, so the paper's 8B baseline is just a Qwen3-VL-8B path.

One turn: the agent's messages (internal pixel coordinates, image placeholders) are converted to
the backbone's coordinate convention (``coords``), rendered with the folder's chat template, and
the placeholders' arrays go to the processor in order. Generation stops at ``</tool_call>``,
``</answer>`` or eos (``stopping``). The generated call is converted back to internal pixels; the
model's own text stays in ``Generation.raw_text``. With auxiliary heads (``heads``) in ``check``
mode a call whose box disagrees with the heads' box is flagged; in ``refine`` mode the executed
call uses the heads' box. Sampling N trajectories returns per-token log-probabilities and ids.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from functools import partial
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pixelis_ros.policy.base import Generation, PolicyError
from pixelis_ros.policy.coords import Geometry, ResizeRule, convention
from pixelis_ros.policy.heads import load_heads
from pixelis_ros.policy.heads_numpy import HEADS_FILE, heads_verdict
from pixelis_ros.policy.model_folder import ModelFolderError, check_model_folder
from pixelis_ros.policy.profile import PROFILE_FILE, load_profile
from pixelis_ros.policy.prompt import geometries, model_prompt
from pixelis_ros.policy.stopping import STOP_STRINGS, StopRule, stopping_criteria
from pixelis_ros.policy.tokenizer import missing_tokens
from pixelis_ros.policy.turn import check_heads_mode, check_options, finish_turn, ground_call, heads_target

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
"""LoRA goes on the language model's projections only (the vision tower stays frozen)."""


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around peft wrapping a model (``get_peft_model``, ``PeftModel.from_pretrained``): peft reads
    transformers' deprecated ``is_gradient_checkpointing`` there, and the FutureWarning that
    transformers then prints on every adapter load is about peft's code, which no user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning,
                                module=r"transformers\.modeling_utils")
        yield


@dataclass(frozen=True)
class HFPolicyOptions:
    """Keyword options of ``load_hf_policy``."""

    max_new_tokens: int = 256
    """Longest turn generated."""
    dtype: str = "float32"
    """Weights' dtype: float32, bfloat16 or float16 (an 8B model wants bfloat16 on a GPU)."""
    device: str = "cpu"
    """torch device (``cpu``, ``cuda``, ``cuda:1``)."""
    adapter: str | None = None
    """A LoRA adapter folder (peft, safetensors) activated on load."""
    heads: str = "auto"
    """Auxiliary heads at inference: ``off``, ``check`` (flag disagreeing calls), ``refine``
    (execute the heads' box; the generated one stays in ``raw_text``) or ``auto`` (the mode the
    folder's prompt profile names: ``refine`` for a model trained with heads, else ``off``)."""
    heads_path: str | None = None
    """Folder of heads.safetensors; default: the adapter folder if it has one, else the model folder."""
    heads_min_iou: float = 0.5
    """In check mode, a call whose box has IoU below this with the heads' box is flagged."""
    stop_strings: tuple[str, ...] = STOP_STRINGS
    """Strings that end a turn (kept in the text)."""


class HFPolicy:
    name = "torch"

    def __init__(self, model_dir: Path, options: HFPolicyOptions):
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = check_model_folder(model_dir)
        # A LoRA run's adapter folder carries the profile it was trained with; else the model's.
        adapter_profile = options.adapter and (Path(options.adapter) / PROFILE_FILE).is_file()
        self.profile = load_profile(options.adapter if adapter_profile else model_dir)
        if options.heads == "auto":
            options = replace(options, heads=self.profile.heads)
        if options.dtype not in DTYPES:
            raise PolicyError(f"dtype {options.dtype!r}: use one of {', '.join(DTYPES)}")
        check_heads_mode(options.heads)
        self.model_dir, self.options, self.arch = Path(model_dir), options, folder.arch
        self.processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
        self.tokenizer = self.processor.tokenizer
        missing = missing_tokens(self.tokenizer)
        if missing:
            raise ModelFolderError(f"{self.model_dir / 'tokenizer.json'} lacks the special token(s) {', '.join(missing)} "
                                   "as single tokens; use the checkpoint's own tokenizer files or rebuild the folder "
                                   "with `pixelis model build`")
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True, use_safetensors=True,
                                                                 dtype=DTYPES[options.dtype]).to(options.device).eval()
        gen = self.model.generation_config
        eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
        eos = [i for i in eos + [self.tokenizer.convert_tokens_to_ids("<|im_end|>")] if i is not None]
        self.eos_ids = tuple(dict.fromkeys(eos))
        self.pad_id = gen.pad_token_id if gen.pad_token_id is not None else self.eos_ids[0]
        self.stop = StopRule(self.tokenizer, self.eos_ids, tuple(options.stop_strings))
        self.resize = ResizeRule.of(self.processor.image_processor)
        self.convention = convention(self.arch)
        self.active_adapter: str | None = None
        if options.adapter:
            self.load_adapter(options.adapter)
        self.heads = None
        if options.heads != "off":
            self.heads = self._load_heads().to(options.device)
        self.pointer_temperature = 0.0
        """Above 0 (RL rollouts), the grounding cell is sampled from the pointer's distribution at this
        temperature instead of its argmax; the verdict records the cell's log-probability."""

    # --- adapters -------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return self.model.config.get_text_config().hidden_size

    def _peft(self) -> bool:
        from peft import PeftModel

        return isinstance(self.model, PeftModel)

    def add_adapter(self, name: str = "default", r: int = 8, alpha: int = 16, init_lora_weights: bool = True) -> None:
        """A fresh LoRA adapter on the language model (for training), made active."""
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=LORA_TARGETS,
                            init_lora_weights=init_lora_weights)
        if self._peft():
            self.model.add_adapter(name, config)
        else:
            with peft_wrapping():
                self.model = get_peft_model(self.model, config, adapter_name=name)
        self.set_adapter(name)

    def load_adapter(self, path: str | Path, name: str | None = None) -> str:
        """Load a peft LoRA folder (safetensors only) under ``name`` (default: the folder name) and activate it."""
        from peft import PeftModel

        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise ModelFolderError(f"{path / 'adapter_config.json'} is missing; an adapter folder is what "
                                   "HFPolicy.save_adapter (peft save_pretrained) writes")
        if not (path / "adapter_model.safetensors").is_file():
            extra = " (adapter_model.bin is refused: pickle; re-save with safe_serialization=True)" \
                if (path / "adapter_model.bin").is_file() else ""
            raise ModelFolderError(f"{path / 'adapter_model.safetensors'} is missing{extra}")
        name = name or path.name
        if self._peft():
            self.model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        else:
            with peft_wrapping():
                self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name, is_trainable=False)
        self.model.eval()
        self.set_adapter(name)
        return name

    def set_adapter(self, name: str | None) -> None:
        """Activate a loaded adapter; ``None`` runs the base model."""
        if name is not None:
            if not self._peft() or name not in self.model.peft_config:
                raise PolicyError(f"no adapter {name!r} loaded; loaded: {self.adapters()}")
            self.model.set_adapter(name)
        self.active_adapter = name

    def adapters(self) -> list[str]:
        return sorted(self.model.peft_config) if self._peft() else []

    def save_adapter(self, path: str | Path, name: str | None = None) -> Path:
        """Save one adapter as a peft folder (safetensors), with the heads when they are loaded."""
        name = name or self.active_adapter
        if not self._peft() or name is None:
            raise PolicyError("no adapter to save; add_adapter or load_adapter first")
        path = Path(path)
        self.model.save_pretrained(str(path), selected_adapters=[name], safe_serialization=True)
        sub = path / name
        if name != "default" and sub.is_dir():  # peft nests non-default adapters; keep one flat layout
            for f in sub.iterdir():
                f.replace(path / f.name)
            sub.rmdir()
        if self.heads is not None:
            from pixelis_ros.policy.heads import save_heads
            save_heads(self.heads, path)
        return path

    def merge_adapter(self) -> None:
        """Fold the active adapter into the weights (export, faster decoding); others are dropped."""
        if not self._peft() or self.active_adapter is None:
            raise PolicyError("no active adapter to merge")
        self.model = self.model.merge_and_unload(adapter_names=[self.active_adapter]).eval()
        self.active_adapter = None

    def _adapter_context(self):
        if self._peft() and self.active_adapter is None:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def _load_heads(self):
        candidates = [self.options.heads_path] if self.options.heads_path else []
        if self.options.adapter and (Path(self.options.adapter) / HEADS_FILE).is_file():
            candidates.append(self.options.adapter)
        candidates.append(str(self.model_dir))
        return load_heads(candidates[0], self.hidden_size)

    # --- prompt ---------------------------------------------------------------------------------

    def geometries(self, images: dict[str, np.ndarray]) -> dict[str, Geometry]:
        return geometries(self.arch, images, self.resize)

    def prepare(self, messages: list[dict], images: dict[str, np.ndarray]):
        """Processor inputs for ``messages``; returns ``(inputs, image_refs_in_order, geometries)``."""
        inputs, refs, geoms = model_prompt(self.processor, self.arch, self.resize, messages, images, "pt", self.profile)
        return inputs.to(self.options.device), refs, geoms

    def logits(self, messages: list[dict], images: dict[str, np.ndarray], continuation: list[int] | None = None) -> torch.Tensor:
        """Logits ``[T, V]`` of the prompt (+ ``continuation`` token ids) under the active adapter;
        RL and tests recompute log-probabilities with it."""
        inputs, _, _ = self.prepare(messages, images)
        if continuation:
            extra = torch.tensor([continuation], device=inputs["input_ids"].device)
            inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            if "mm_token_type_ids" in inputs:
                inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(extra)], dim=1)
        with torch.no_grad(), self._adapter_context():
            return self.model(**inputs).logits[0]

    # --- generation -----------------------------------------------------------------------------

    def generate(self, messages: list[dict], images: dict[str, np.ndarray]) -> Generation:
        """The next turn, greedy."""
        return self._run(messages, images, n=1, sample=False)[0]

    def sample(self, messages: list[dict], images: dict[str, np.ndarray], n: int, temperature: float = 1.0,
               top_p: float = 1.0, max_new_tokens: int | None = None) -> list[Generation]:
        """``n`` sampled turns; ``token_logprobs`` are under the tempered, top-p-filtered distribution."""
        if n < 1 or temperature <= 0:
            raise PolicyError(f"sample needs n >= 1 and temperature > 0, got n={n}, temperature={temperature}")
        return self._run(messages, images, n=n, sample=True, temperature=temperature, top_p=top_p,
                         max_new_tokens=max_new_tokens)

    def _run(self, messages, images, n: int, sample: bool, temperature: float = 1.0, top_p: float = 1.0,
             max_new_tokens: int | None = None) -> list[Generation]:
        from transformers import StoppingCriteriaList

        inputs, refs, geometries = self.prepare(messages, images)
        prompt_len = inputs["input_ids"].shape[1]
        kwargs = dict(max_new_tokens=max_new_tokens or self.options.max_new_tokens, num_return_sequences=n,
                      stopping_criteria=StoppingCriteriaList([stopping_criteria(self.stop, prompt_len)]),
                      eos_token_id=list(self.eos_ids), pad_token_id=self.pad_id, output_scores=True,
                      return_dict_in_generate=True, output_hidden_states=self.heads is not None,
                      # a released generation_config.json sets one (Qwen2.5-VL: 1.05): it would bend greedy
                      # decoding and the reported log-probabilities away from the model's distribution
                      repetition_penalty=1.0)
        if sample:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.no_grad(), self._adapter_context():
            out = self.model.generate(**inputs, **kwargs)
        generated = out.sequences[:, prompt_len:]
        logprobs = torch.stack([torch.log_softmax(s.float(), -1).gather(-1, generated[:, t:t + 1])[:, 0]
                                for t, s in enumerate(out.scores)], dim=1)
        results = []
        for row in range(generated.shape[0]):
            ids = generated[row].tolist()
            gen = finish_turn(self.stop, self.eos_ids, self.tokenizer, ids, logprobs[row].tolist())
            verdict = None if self.heads is None else partial(self._heads_verdict, out, row, prompt_len, inputs, refs,
                                                              gen.token_ids, geometries)
            results.append(ground_call(gen, geometries, self.options.heads, verdict))
        return results

    def _heads_verdict(self, out, row, prompt_len, inputs, refs, token_ids, geometries, ref, arguments) -> dict:
        target = heads_target(self.tokenizer, token_ids, refs, ref, geometries)
        if isinstance(target, dict):
            return target
        g, position = target
        states = self._hidden_states(out, row, prompt_len, position, inputs)
        query = states[prompt_len + position]
        cells, rows, cols = self.image_cells(inputs, refs, ref)
        keys = states[cells]
        grid = torch.tensor([[rows, cols]], device=keys.device)
        sampled = None
        with torch.no_grad():
            if self.pointer_temperature > 0:
                logits = self.heads.pointer_logits(query[None].float(), keys[None].float())[0] / self.pointer_temperature
                dist = torch.distributions.Categorical(logits=logits)
                cell = dist.sample()
                sampled = {"cell_logprob": float(dist.log_prob(cell)), "pointer_entropy": float(dist.entropy())}
                pred = self.heads(query[None].float(), keys[None].float(), grid, chosen=cell[None])
            else:
                pred = self.heads(query[None].float(), keys[None].float(), grid)
        pred = {k: v[0].float().cpu().numpy() for k, v in pred.items()}
        verdict = heads_verdict(pred, self.options.heads, ref, g.width, g.height, arguments, self.options.heads_min_iou)
        if sampled is not None:
            verdict.update(sampled, sampled_position=position)
        return verdict

    def image_cells(self, inputs, refs: list[str], ref: str) -> tuple[torch.Tensor, int, int]:
        """Token positions (row-major cells) of the last image named ``ref`` in a prompt's
        ``inputs``, and its grid's rows and cols: the pointer's keys."""
        image_index = len(refs) - 1 - refs[::-1].index(ref)
        grid_thw = inputs["image_grid_thw"][image_index].tolist()
        merge = self.processor.image_processor.merge_size
        rows, cols = grid_thw[1] // merge, grid_thw[2] // merge
        token_positions = (inputs["input_ids"][0] == self.model.config.image_token_id).nonzero()[:, 0]
        start = sum(int(t[1] * t[2]) // merge ** 2 for t in inputs["image_grid_thw"][:image_index].tolist())
        return token_positions[start:start + rows * cols], rows, cols

    def _hidden_states(self, out, row, prompt_len, position, inputs) -> torch.Tensor:
        """Last-layer hidden states ``[prompt_len + position + 1, H]`` of one row, from the generation's
        own forward passes (step 0 holds the prompt; step k the k-th generated input token)."""
        steps = out.hidden_states
        needed = position + 1  # the <tool_call> token is the input of step position + 1
        if len(steps) > needed:
            parts = [steps[0][-1][row]] + [steps[k][-1][row] for k in range(1, needed + 1)]
            return torch.cat(parts, dim=0)
        # The generation ended on <tool_call>: its state was never computed; one extra pass.
        sequence = out.sequences[row:row + 1, :prompt_len + position + 1]
        extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        with torch.no_grad(), self._adapter_context():
            result = self.model(input_ids=sequence, attention_mask=torch.ones_like(sequence), output_hidden_states=True,
                                **extra)
        return result.hidden_states[-1][0]


def load_hf_policy(model_dir: Path, **options) -> HFPolicy:
    """The ``torch`` backend's factory (``registry.BACKENDS``): options are ``HFPolicyOptions`` fields."""
    if "stop_strings" in options:
        options["stop_strings"] = tuple(options["stop_strings"])
    return HFPolicy(Path(model_dir), check_options(HFPolicyOptions, options, "torch"))


