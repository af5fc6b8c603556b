"""Coordinate conventions per backbone (DESIGN §4.2), shared by every policy backend.

Internally a box or point is in absolute pixels of the image the call names. Qwen2.5-VL was
trained on absolute pixels of its *resized* input (the processor's ``smart_resize``); Qwen3-VL on
0–1000 relative coordinates. Both are a per-axis scale: the model sees the image as a
``model_width`` x ``model_height`` canvas (the resized size, or 1000 x 1000). A backend converts
the prompt (assistant calls and tool responses in the history) into the model's convention and
the generated call back into internal pixels.

No torch or transformers here: the ONNX/TensorRT runtimes reuse it on a slim install.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from pixelis_ros.cota import format_call, parse_turn

RELATIVE_ARCHS = ("qwen3_vl",)
"""Backbones whose coordinates are 0–1000 relative; the others use resized-input pixels."""
RELATIVE_SCALE = 1000.0
COORD_KEYS = ("bbox_2d", "point_2d")
"""Argument/response keys holding coordinates (flat lists x, y, ...)."""

PROMPT_PIXELS = "Boxes are [x1, y1, x2, y2] in absolute pixels of the image the call names"
"""The coordinate sentence of ``cota.SYSTEM_PROMPT``; replaced per convention in the prompt."""
PROMPT_BY_CONVENTION = {
    "resized": "Boxes are [x1, y1, x2, y2] in absolute pixels of the image the call names, as you see it",
    "relative": "Boxes are [x1, y1, x2, y2] on a 0-1000 scale relative to the width and height of the image the "
                "call names",
}


def convention(arch: str) -> str:
    return "relative" if arch in RELATIVE_ARCHS else "resized"


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) the Qwen-VL image processor resizes an image to (multiples of ``factor``)."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class Geometry:
    """How one image maps between internal pixels and the model's coordinates."""

    width: int
    """Internal image width in pixels."""
    height: int
    """Internal image height in pixels."""
    model_width: float
    """Width of the model's coordinate canvas (resized width, or 1000)."""
    model_height: float
    """Height of the model's coordinate canvas (resized height, or 1000)."""

    def to_model(self, values, digits: int = 0) -> list[float]:
        """Internal ``[x, y, ...]`` -> model coordinates (rounded; models emit integers)."""
        out = [v * (self.model_width / self.width if i % 2 == 0 else self.model_height / self.height)
               for i, v in enumerate(float(v) for v in values)]
        return [int(round(v)) if digits == 0 else round(v, digits) for v in out]

    def from_model(self, values, digits: int = 1) -> list[float]:
        """Model ``[x, y, ...]`` -> internal pixels."""
        return [round(float(v) * (self.width / self.model_width if i % 2 == 0 else self.height / self.model_height),
                      digits) for i, v in enumerate(values)]


@dataclass(frozen=True)
class ResizeRule:
    """The processor's resize parameters (read from the model folder's image processor)."""

    factor: int
    """patch_size * merge_size: resized sides are multiples of it."""
    min_pixels: int
    """Smallest resized area."""
    max_pixels: int
    """Largest resized area."""

    @classmethod
    def of(cls, image_processor) -> "ResizeRule":
        """The rule of a Qwen-VL image processor (a released checkpoint's ``min_pixels``/``max_pixels``
        arrive as ``size`` shortest/longest edge in transformers 5)."""
        ip = image_processor
        return cls(ip.patch_size * ip.merge_size, ip.size["shortest_edge"], ip.size["longest_edge"])


def geometry(arch: str, width: int, height: int, rule: ResizeRule) -> Geometry:
    if convention(arch) == "relative":
        return Geometry(width, height, RELATIVE_SCALE, RELATIVE_SCALE)
    h, w = smart_resize(height, width, rule.factor, rule.min_pixels, rule.max_pixels)
    return Geometry(width, height, float(w), float(h))


def _is_coords(value) -> bool:
    return isinstance(value, list) and len(value) in (2, 4) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                                    for v in value)


def convert_arguments(arguments: dict, geometries: dict[str, Geometry], default_ref: str, to_model: bool) -> dict:
    """A copy of call arguments (or a tool response object) with every ``bbox_2d``/``point_2d``
    converted. The image of a value is the nearest enclosing ``"image"`` key, else ``default_ref``;
    images without a known geometry are left as they are."""

    def walk(obj, ref: str):
        if isinstance(obj, list):
            return [walk(v, ref) for v in obj]
        if not isinstance(obj, dict):
            return obj
        ref = obj["image"] if isinstance(obj.get("image"), str) else ref
        g = lookup(geometries, ref)
        out = {}
        for key, value in obj.items():
            if key in COORD_KEYS and _is_coords(value) and g is not None:
                out[key] = g.to_model(value) if to_model else g.from_model(value)
            else:
                out[key] = walk(value, ref)
        return out

    return walk(arguments, default_ref)


def box_image(name: str, arguments) -> str:
    """The image a call's box is given in: its ``image`` argument, else (``track``) its start
    frame, else the newest frame."""
    if not isinstance(arguments, dict):
        return "frame:-1"
    for key in ("image", "start") if name == "track" else ("image",):
        if isinstance(arguments.get(key), str):
            return arguments[key]
    return "frame:0" if name == "track" else "frame:-1"


def lookup(geometries: dict[str, Geometry], ref: str) -> Geometry | None:
    """The geometry of ``ref``; frames of one stream share a size, so ``frame:*`` falls back to
    ``frame:-1``."""
    if ref in geometries:
        return geometries[ref]
    return geometries.get("frame:-1") if ref.startswith("frame:") else None


_CALL = re.compile(r"(<tool_call>\s*)(.*?)(\s*</tool_call>)", re.DOTALL)
_RESPONSE = re.compile(r"(<tool_response>\s*)(.*?)(\s*</tool_response>)", re.DOTALL)


def _rewrite(pattern: re.Pattern, text: str, convert) -> tuple[str, str | None]:
    """Rewrite each JSON body matched by ``pattern``; returns the text and the last call's image."""
    last_ref = None

    def sub(m: re.Match) -> str:
        nonlocal last_ref
        try:
            obj = json.loads(m.group(2))
        except json.JSONDecodeError:
            return m.group(0)  # malformed: shown as it was written
        if not isinstance(obj, dict):
            return m.group(0)
        new, ref = convert(obj)
        last_ref = ref or last_ref
        return m.group(1) + json.dumps(new, ensure_ascii=False) + m.group(3)

    return pattern.sub(sub, text), last_ref


def messages_to_model(messages: list[dict], geometries: dict[str, Geometry], conv: str) -> list[dict]:
    """Chat messages with internal coordinates -> the model's convention (system prompt sentence,
    assistant calls, tool responses). Pure: the input is not modified."""
    out: list[dict] = []
    call_ref = "frame:-1"
    for msg in messages:
        content = msg.get("content")
        if not isinstance(content, list):
            out.append(dict(msg))
            continue
        parts = []
        for part in content:
            if not (isinstance(part, dict) and isinstance(part.get("text"), str)):
                parts.append(part)
                continue
            text = part["text"].replace(PROMPT_PIXELS, PROMPT_BY_CONVENTION[conv])

            def call(obj):
                args = obj.get("arguments")
                ref = box_image(obj.get("name"), args)
                if isinstance(args, dict):
                    obj = dict(obj, arguments=convert_arguments(args, geometries, ref, to_model=True))
                return obj, ref

            text, ref = _rewrite(_CALL, text, call)
            call_ref = ref or call_ref
            text, _ = _rewrite(_RESPONSE, text, lambda obj: (convert_arguments(obj, geometries, call_ref, True), None))
            parts.append(dict(part, text=text))
        out.append(dict(msg, content=parts))
    return out


def generated_call(text: str, geometries: dict[str, Geometry]):
    """The turn's tool call, the image it names, and its arguments in internal pixels; ``None`` when
    the turn has no valid call. Every backend maps a generated call back through this one path."""
    step = parse_turn(text)
    if step.error is not None or step.call is None:
        return None
    ref = box_image(step.call.name, step.call.arguments)
    return step.call, ref, convert_arguments(step.call.arguments, geometries, ref, to_model=False)


def with_call(text: str, call, arguments: dict) -> str:
    """``text`` with its first ``<tool_call>`` block holding ``call`` with ``arguments`` instead."""
    block = f"<tool_call>\n{format_call(type(call)(call.name, arguments))}\n</tool_call>"
    start = text.find("<tool_call>")
    end = text.find("</tool_call>", start)  # str.find: linear, unlike a lazy regex on hostile text
    if start < 0 or end < 0:
        return text
    return text[:start] + block + text[end + len("</tool_call>"):]
