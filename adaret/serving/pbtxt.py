"""Protobuf text format for Triton's ``config.pbtxt``, rendered from plain dicts (no protobuf needed to write one).

A config is a dict of field name -> value: a str, int, float or bool; an ``Enum`` for a protobuf enum value
(``TYPE_INT64``, ``KIND_CPU``), written bare; a dict for a message; a list for a repeated field (a list of dicts
is a repeated message). Map fields (``parameters``) are repeated ``{key, value}`` messages, as text format
spells them. The tests parse every config this writes with Triton's own ``model_config_pb2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Text format's C-style escapes; any other character (UTF-8 included) is written as it is.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\000"}


class Enum(str):
    """A protobuf enum value: written without quotes."""


def render(config: Mapping[str, Any]) -> str:
    """``config`` as protobuf text format, one field per line, messages indented by two spaces."""
    return "".join(_fields(config, 0))


def parameters(values: Mapping[str, str]) -> list[dict[str, Any]]:
    """Triton's ``parameters`` map (string -> ``{string_value}``) as the repeated entries text format expects."""
    return [{"key": key, "value": {"string_value": str(value)}} for key, value in values.items()]


def _fields(message: Mapping[str, Any], depth: int) -> list[str]:
    pad = "  " * depth
    lines: list[str] = []
    for name, value in message.items():
        if value is None:
            continue
        if isinstance(value, list) and value and isinstance(value[0], Mapping):
            for item in value:  # a repeated message: one block per item
                lines += [f"{pad}{name} {{\n", *_fields(item, depth + 1), f"{pad}}}\n"]
        elif isinstance(value, list):
            lines.append(f"{pad}{name}: [{', '.join(_scalar(v) for v in value)}]\n")
        elif isinstance(value, Mapping):
            lines += [f"{pad}{name} {{\n", *_fields(value, depth + 1), f"{pad}}}\n"]
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}\n")
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_ESCAPES.get(char, char) for char in value) + '"'
    raise TypeError(f"cannot write {type(value).__name__} into config.pbtxt")
