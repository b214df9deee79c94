"""What an exported graph records about itself in ONNX ``metadata_props`` (all values are strings)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import onnx

PREFIX = "adaret."
JSON_KEYS = ("schedule", "keep_counts", "label_names", "input_names", "output_names", "pass_report")


def write_metadata(model: onnx.ModelProto, values: Mapping[str, Any]) -> None:
    """Set ``adaret.*`` entries (replacing old ones); lists and dicts are stored as JSON."""
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in values.items():
        text = json.dumps(value) if isinstance(value, list | dict | tuple) else str(value)
        model.metadata_props.add(key=PREFIX + key, value=text)


def read_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """The ``adaret.*`` entries of a model, with the JSON ones decoded."""
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        if prop.key.startswith(PREFIX):
            key = prop.key.removeprefix(PREFIX)
            out[key] = json.loads(prop.value) if key in JSON_KEYS else prop.value
    return out
