"""What an exported graph records about itself in ONNX ``metadata_props`` (all values are strings).

This module imports no onnx at run time, so every later stage (the edge runtime included) decodes the
metadata by this one rule, whether it holds a ModelProto, an onnx-ir model or ONNX Runtime's metadata map.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx

PREFIX = "adaret."
JSON_KEYS = ("schedule", "keep_counts", "label_names", "input_names", "output_names", "pass_report", "budget_search")


def write_metadata(model: onnx.ModelProto, values: Mapping[str, Any]) -> None:
    """Set ``adaret.*`` entries (replacing old ones); lists and dicts are stored as JSON."""
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in values.items():
        text = json.dumps(value) if isinstance(value, list | dict | tuple) else str(value)
        model.metadata_props.add(key=PREFIX + key, value=text)


def decode_metadata(entries: Mapping[str, str]) -> dict[str, Any]:
    """The ``adaret.*`` entries of a key -> string map, JSON-valued keys decoded.

    A JSON key whose value does not parse stays a string rather than making the model unloadable.
    """
    out: dict[str, Any] = {}
    for key, value in entries.items():
        if key.startswith(PREFIX):
            name = key.removeprefix(PREFIX)
            out[name] = _json_or_text(value) if name in JSON_KEYS else value
    return out


def read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """The ``adaret.*`` entries of a ModelProto, decoded."""
    return decode_metadata({prop.key: prop.value for prop in model.metadata_props})


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
