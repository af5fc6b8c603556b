"""torch modules that the ONNX export traces: the vision tower and the decoder with KV cache.

They reuse the loaded model's own submodules and weights; only the grid-dependent plumbing
differs from transformers' forward:

- Vision: transformers splits attention per frame/window with ``cu_seqlens.tolist()``, which
  freezes one image size into a traced graph. Here every patch carries a segment id (computed by
  ``onnx_inputs``) and attention is one masked product, so one graph serves every image size.
- Decoder: one graph for prefill and decode. It embeds ``input_ids`` itself and puts the image
  embeddings at the ``<|image_pad|>`` positions (a gather driven by a running count of image
  tokens, so a decode step passes zero image rows), adds Qwen3-VL's deepstack features after the
  early layers the same way, and returns the logits of the last position only (what decoding
  needs; the vocabulary projection of a long prompt is the biggest single cost otherwise), the
  KV cache, and the final-norm hidden state of every input position (the auxiliary heads' input;
  the runtime fetches it only with heads on).
  The 3D rotary positions come in as an input (``onnx_inputs.rope_positions``).
- LoRA as inputs (``--lora adapters``, see ``onnx_lora``): each targeted projection becomes
  ``LoraInputLinear``, whose ``a``/``b`` matrices are decoder inputs appended after the KV cache
  (and deepstack), so ONNX Runtime adapters can swap them per run.
"""

from __future__ import annotations

import torch
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _segment_bias(segments: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    same = segments[:, None] == segments[None, :]
    return torch.where(same, torch.zeros((), dtype=dtype), torch.full((), torch.finfo(dtype).min, dtype=dtype))


class VisionGraph(nn.Module):
    """pixel_values + precomputed grid inputs -> image embeddings (+ deepstack features)."""

    def __init__(self, model: nn.Module, arch: str):
        super().__init__()
        self.visual = model.model.visual
        self.arch = arch

    def _attention(self, block: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   bias: torch.Tensor) -> torch.Tensor:
        attn = block.attn
        n = x.shape[0]
        q, k, v = attn.qkv(x).reshape(n, 3, attn.num_heads, -1).permute(1, 2, 0, 3).unbind(0)  # (heads, n, d)
        c, s = cos.unsqueeze(0).float(), sin.unsqueeze(0).float()
        q = (q.float() * c + _rotate_half(q.float()) * s).to(x.dtype)
        k = (k.float() * c + _rotate_half(k.float()) * s).to(x.dtype)
        weights = torch.matmul(q, k.transpose(1, 2)) * attn.scaling + bias
        out = torch.matmul(torch.softmax(weights.float(), dim=-1).to(x.dtype), v)
        return attn.proj(out.permute(1, 0, 2).reshape(n, -1))

    def _block(self, block: nn.Module, x, cos, sin, bias):
        x = x + self._attention(block, block.norm1(x), cos, sin, bias)
        return x + block.mlp(block.norm2(x))

    def forward(self, pixel_values, rotary_pos_ids, frame_segments, window_index=None, reverse_index=None,
                window_segments=None, interp_indices=None, interp_weights=None):
        v = self.visual
        x = v.patch_embed(pixel_values)
        cos, sin = v.rotary_pos_emb(x, rotary_pos_ids)
        full_bias = _segment_bias(frame_segments, x.dtype)
        if self.arch == "qwen2_5_vl":
            unit = v.spatial_merge_unit
            n = x.shape[0]

            def permute(t):
                return t.reshape(n // unit, unit, -1)[window_index].reshape(n, -1)

            x, cos, sin = permute(x), permute(cos), permute(sin)
            window_bias = _segment_bias(window_segments, x.dtype)
            for i, block in enumerate(v.blocks):
                x = self._block(block, x, cos, sin, full_bias if i in v.fullatt_block_indexes else window_bias)
            return (v.merger(x)[reverse_index],)
        x = x + (v.pos_embed(interp_indices) * interp_weights[:, :, None]).sum(1).to(x.dtype)
        deepstack = []
        for i, block in enumerate(v.blocks):
            x = self._block(block, x, cos, sin, full_bias)
            if i in v.deepstack_visual_indexes:
                deepstack.append(v.deepstack_merger_list[v.deepstack_visual_indexes.index(i)](x))
        return v.merger(x), torch.stack(deepstack)


def _scatter_rows(is_image: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(seq, dim): row k of ``rows`` at the k-th image position, zeros elsewhere."""
    padded = torch.cat([rows.new_zeros(1, rows.shape[-1]), rows], dim=0)
    index = torch.cumsum(is_image.to(torch.int64), dim=0) * is_image.to(torch.int64)
    return padded[index]


class LoraInputs:
    """The current forward's LoRA matrices by module name; DecoderGraph fills it from its inputs.

    A plain object rather than module attributes: the tracer treats these as the graph inputs
    they came from, where tensors stored on modules would be lifted to constants."""

    def __init__(self):
        self.tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


class LoraInputLinear(nn.Module):
    """``base(x) + (x @ a) @ b`` with ``a`` ``(in, r)`` and ``b`` ``(r, out)`` (scaling folded into b)."""

    def __init__(self, base: nn.Linear, name: str, inputs: LoraInputs):
        super().__init__()
        self.base = base
        self.name = name
        self.inputs = inputs

    def forward(self, x):
        a, b = self.inputs.tensors[self.name]
        return self.base(x) + torch.matmul(torch.matmul(x, a), b)


def install_lora_inputs(model: nn.Module, modules: list[str]) -> LoraInputs:
    """Replace each named Linear of ``model`` with a LoraInputLinear reading one shared LoraInputs."""
    inputs = LoraInputs()
    for name in modules:
        base = model.get_submodule(name)
        if not isinstance(base, nn.Linear):
            raise TypeError(f"{name} is {type(base).__name__}, not a Linear: LoRA inputs need plain projections")
        model.set_submodule(name, LoraInputLinear(base, name, inputs))
    return inputs


class DecoderGraph(nn.Module):
    """(input_ids, image rows, 3D positions, mask, past KV[, deepstack][, LoRA a/b]) ->
    (last logits, present KV, last hidden state)."""

    def __init__(self, model: nn.Module, arch: str, image_token_id: int, lora_modules: list[str] | None = None):
        """``lora_modules``: modules whose LoRA a/b come as the last 2 * len inputs (a, b per module)."""
        super().__init__()
        self.model = model
        self.lora_modules = list(lora_modules or [])
        self.lora = install_lora_inputs(model, self.lora_modules) if self.lora_modules else None
        self.arch = arch
        self.image_token_id = image_token_id
        self.num_layers = model.config.text_config.num_hidden_layers
        if arch == "qwen3_vl":
            # transformers adds deepstack rows with boolean indexing; our rows are already dense
            # (zeros off the image), so a plain add is the same sum and exports as one Add.
            model.model.language_model._deepstack_process = lambda hidden, _mask, embeds: hidden + embeds

    def forward(self, input_ids, image_embeds, position_ids, attention_mask, *past_and_deepstack):
        from transformers import DynamicCache

        lm = self.model.model.language_model
        past = past_and_deepstack[: 2 * self.num_layers]
        if self.lora is not None:
            tail = past_and_deepstack[len(past_and_deepstack) - 2 * len(self.lora_modules):]
            self.lora.tensors = {m: (tail[2 * i], tail[2 * i + 1]) for i, m in enumerate(self.lora_modules)}
        is_image = input_ids[0] == self.image_token_id
        embeds = lm.embed_tokens(input_ids)
        embeds = torch.where(is_image[None, :, None], _scatter_rows(is_image, image_embeds)[None].to(embeds.dtype), embeds)
        cache = DynamicCache(config=self.model.config.text_config)
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        extra = {}
        if self.arch == "qwen3_vl":
            deepstack = past_and_deepstack[2 * self.num_layers]
            extra = {"visual_pos_masks": is_image[None],
                     "deepstack_visual_embeds": [_scatter_rows(is_image, d)[None] for d in deepstack.unbind(0)]}
        out = lm(inputs_embeds=embeds, position_ids=position_ids, attention_mask=attention_mask, cache=cache,
                 use_cache=True, **extra)
        logits = self.model.lm_head(out.last_hidden_state[:, -1:, :])
        present = []
        for layer in out.cache.layers:
            present += [layer.keys, layer.values]
        return (logits, *present, out.last_hidden_state)  # hidden states last: the heads' input
