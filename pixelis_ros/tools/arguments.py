"""Typed tool arguments: JSON schemas derived from dataclasses, and strict validation.

Each tool declares its arguments as a frozen dataclass; the field types are the contract and
each field's ``metadata["doc"]`` is its description. From that one declaration we derive the
JSON schema shown to the model (Qwen/OpenAI function format) and the validator that turns a
model's JSON into a typed instance, so the two can never drift apart. ``tool_schema`` is where
the grammar's prompts get a tool's function schema: the grammar (``cota``) imports no tools.
Error messages quote values through ``cota.quote`` (bounded: a 1 MB value is not echoed back).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

from pixelis_ros.cota import quote

Box = tuple[float, float, float, float]
Point = tuple[float, float]


def arg(default: Any = dataclasses.MISSING, doc: str = "") -> Any:
    """A documented dataclass field for tool arguments."""
    return dataclasses.field(default=default, metadata={"doc": doc})


class ArgumentError(ValueError):
    """A tool call's arguments do not match the tool's typed signature."""


def strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1 and len(typing.get_args(tp)) == 2:
            return inner[0], True
    return tp, False


def _type_schema(tp: Any) -> dict:
    tp, _ = strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if origin is Literal:
        return {"type": "string", "enum": list(typing.get_args(tp))}
    if origin is tuple:
        items = typing.get_args(tp)
        return {"type": "array", "items": _type_schema(items[0]), "minItems": len(items), "maxItems": len(items)}
    raise TypeError(f"unsupported argument type {tp!r}")


def json_schema(args_cls: type) -> dict:
    """JSON schema (``type: object``) of a tool's argument dataclass."""
    hints = typing.get_type_hints(args_cls)
    props, required = {}, []
    for f in dataclasses.fields(args_cls):
        schema = _type_schema(hints[f.name])
        schema["description"] = f.metadata.get("doc", "")
        if f.default is dataclasses.MISSING:
            required.append(f.name)
        elif f.default is not None:
            schema["default"] = list(f.default) if isinstance(f.default, tuple) else f.default
        props[f.name] = schema
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def tool_schema(tool_cls: Any) -> dict:
    """Qwen/OpenAI function schema of a tool class (``name``, ``description``, ``Args``)."""
    return {"type": "function", "function": {"name": tool_cls.name, "description": tool_cls.description,
                                             "parameters": json_schema(tool_cls.Args)}}


def _convert(name: str, tp: Any, value: Any) -> Any:
    tp, optional = strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise ArgumentError(f"argument '{name}' must not be null")
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise ArgumentError(f"argument '{name}' must be a boolean, got {type(value).__name__} {quote(value)}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ArgumentError(f"argument '{name}' must be a number, got {type(value).__name__} {quote(value)}")
        try:
            as_float = float(value)
        except OverflowError:  # an integer beyond a float's range, ~1.8e308
            raise ArgumentError(f"argument '{name}' is out of range: {quote(value)}; numbers must lie within ±1e308") from None
        if not math.isfinite(as_float):
            raise ArgumentError(f"argument '{name}' must be finite, got {quote(value)}")
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ArgumentError(f"argument '{name}' must be an integer, got {quote(value)}")
            return int(value)
        return as_float
    if tp is str:
        if not isinstance(value, str):
            raise ArgumentError(f"argument '{name}' must be a string, got {type(value).__name__} {quote(value)}")
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ArgumentError(f"argument '{name}' must be one of {list(choices)}, got {quote(value)}")
        return value
    if origin is tuple:
        items = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(items):
            raise ArgumentError(f"argument '{name}' must be a list of {len(items)} numbers, got {quote(value)}")
        return tuple(_convert(f"{name}[{i}]", t, v) for i, (t, v) in enumerate(zip(items, value)))
    raise TypeError(f"unsupported argument type {tp!r}")


def parse_arguments(args_cls: type, tool_name: str, arguments: Any) -> Any:
    """Validate a JSON ``arguments`` object against ``args_cls``; raise ArgumentError with a
    message naming the tool and the offending argument."""
    if not isinstance(arguments, dict):
        raise ArgumentError(f"tool '{tool_name}': 'arguments' must be a JSON object, got {type(arguments).__name__}")
    hints = typing.get_type_hints(args_cls)
    fields = {f.name: f for f in dataclasses.fields(args_cls)}
    extra = sorted(set(arguments) - set(fields))
    if extra:
        raise ArgumentError(f"tool '{tool_name}': unknown argument(s) {quote(extra)}; expected {sorted(fields)}")
    missing = [n for n, f in fields.items() if f.default is dataclasses.MISSING and n not in arguments]
    if missing:
        raise ArgumentError(f"tool '{tool_name}': missing required argument(s) {missing}")
    try:
        values = {n: _convert(n, hints[n], v) for n, v in arguments.items()}
    except ArgumentError as e:
        raise ArgumentError(f"tool '{tool_name}': {e}") from None
    return args_cls(**values)
