"""What an exported graph records about itself in ONNX ``metadata_props``: a typed, versioned schema.

Every entry is a string under the ``adaret.`` prefix; lists and dicts are JSON. ``ExportMetadata`` is the one
reader and writer: the exporter builds it, the graph passes and the INT8 calibration add to it, and the
runtime, the engine builder and the validation read it back with ``from_props``, which checks every field
and refuses a malformed or newer-schema graph with one line. Graphs written before the schema carried a
version read as version 1: their keys are the same.

This module imports no onnx at run time, so the edge runtime decodes metadata by this same rule, whether it
holds a ModelProto, an onnx-ir model or ONNX Runtime's metadata map.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adaret.core.errors import AdaretError
from adaret.core.io_spec import QUESTION_ANSWERING, TASKS

if TYPE_CHECKING:
    import onnx

PREFIX = "adaret."
SCHEMA_VERSION = 1
# Far above any absolute-position encoder (BERT-style: 512-8192); a bound on what the runtime will allocate for.
MAX_SEQUENCE_LENGTH = 1_000_000
FORMS = ("dynamic", "static")
# Question answering: the window length and stride the model was trained with, the longest question (in tokens)
# kept whole, and the longest answer span (in tokens) the runtime reads back.
QA_FIELDS = ("max_length", "doc_stride", "max_query_length", "max_answer_length")


class MetadataError(AdaretError):
    """An exported graph's ``adaret.*`` metadata is missing, malformed or from a newer schema."""


@dataclass
class ExportMetadata:
    """The ``adaret.*`` entries of an exported graph, typed. ``seq_len`` is None for a dynamic graph."""

    form: str
    budget: float
    seq_len: int | None = None
    max_positions: int | None = None
    training_budget: float | None = None
    schedule: dict[str, Any] | None = None
    keep_rule: str = ""
    keep_counts: dict[str, list[int]] = field(default_factory=dict)
    checkpoint_sha256: str = ""
    backbone: str = ""
    task: str = "sequence-classification"  # a key of adaret.core.io_spec.TASKS
    scorer: str = "learned"
    pooling: str = ""
    label_names: list[str] = field(default_factory=list)
    opset: int | None = None
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    vocabulary: dict[str, int] | None = None  # size and special ids, from the checkpoint's tokenizer
    budget_search: dict[str, Any] | None = None  # how --budget auto chose ``budget``
    # Question answering only: how the runtime cuts a context into windows and reads spans back (QA_FIELDS)
    question_answering: dict[str, int] | None = None
    pass_report: list[dict[str, Any]] | None = None  # written by the graph passes
    optimized_for: str | None = None
    quantization: str | None = None  # written by INT8 calibration
    calibration_record: str | None = None
    version: str = ""  # the adaret version that exported the graph
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, str] = field(default_factory=dict)  # unknown keys, carried through untouched

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse values no graph of ours carries, naming the field: the runtime must not guess."""
        if self.form not in FORMS:
            raise MetadataError(f"adaret.form is {self.form!r}, not one of {', '.join(FORMS)}")
        if not (isinstance(self.budget, float) and 0.0 < self.budget <= 1.0):
            raise MetadataError(f"adaret.budget must be a number in (0, 1], got {self.budget!r}")
        if (self.seq_len is None) != (self.form == "dynamic"):
            raise MetadataError(f"adaret.seq_len {self.seq_len or 'dynamic'} contradicts adaret.form {self.form}")
        for name in ("seq_len", "max_positions", "opset"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise MetadataError(f"adaret.{name} must be a positive integer, got {value!r}")
        for name in ("seq_len", "max_positions"):  # the runtime lists bucket widths up to it
            value = getattr(self, name)
            if value is not None and value > MAX_SEQUENCE_LENGTH:
                raise MetadataError(f"adaret.{name} {value} is beyond any encoder's positions "
                                    f"(at most {MAX_SEQUENCE_LENGTH})")
        for name in ("label_names", "input_names", "output_names"):
            values = getattr(self, name)
            if not (isinstance(values, list) and all(isinstance(v, str) and v for v in values)):
                raise MetadataError(f"adaret.{name} must be a JSON list of non-empty strings")
        if self.task not in TASKS:
            raise MetadataError(f"adaret.task is {self.task!r}, not one of {', '.join(TASKS)}")
        if (self.question_answering is not None) != (self.task == QUESTION_ANSWERING.task):
            raise MetadataError("adaret.question_answering is set exactly when adaret.task is question-answering")
        if len(set(self.label_names)) != len(self.label_names):
            raise MetadataError("adaret.label_names holds duplicates")
        if self.schedule is not None:
            if not isinstance(self.schedule, dict):
                raise MetadataError(f"adaret.schedule must be a JSON object, got {type(self.schedule).__name__}")
            if not isinstance(self.schedule.get("numerators"), list):
                raise MetadataError("adaret.schedule has no list of numerators")
            if not all(_is_int(k) and k >= 0 for k in self.schedule["numerators"]):
                raise MetadataError("adaret.schedule numerators must be non-negative integers")
            if "denominator" in self.schedule and not (_is_int(self.schedule["denominator"])
                                                       and self.schedule["denominator"] >= 1):
                raise MetadataError("adaret.schedule denominator must be a positive integer")
        for name, (check, shape) in _JSON_SHAPES.items():
            if not check(getattr(self, name)):
                raise MetadataError(f"adaret.{name} must be {shape}")

    @property
    def is_static(self) -> bool:
        return self.form == "static"

    def to_props(self) -> dict[str, str]:
        """``adaret.*`` key -> string; None fields are left out."""
        props: dict[str, str] = {}
        for item in dataclasses.fields(self):
            if item.name == "extra":
                continue
            value = getattr(self, item.name)
            if item.name == "seq_len":
                value = "dynamic" if value is None else value
            if value is not None:
                props[PREFIX + item.name] = _encode(value)
        props.update({PREFIX + key: value for key, value in self.extra.items()})
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "the graph") -> ExportMetadata:
        """Decode and check the ``adaret.*`` entries of any key -> string map."""
        raw = {key.removeprefix(PREFIX): value for key, value in props.items() if key.startswith(PREFIX)}
        if "form" not in raw:
            raise MetadataError(f"{source} was not exported by adaret (no adaret.* metadata)")
        try:
            version = _decode(raw.get("schema_version", "1"), int, "schema_version")
        except MetadataError as exc:
            raise MetadataError(f"{source}: {exc}") from None
        if version > SCHEMA_VERSION:
            raise MetadataError(f"{source} uses metadata schema {version}; this adaret reads up to "
                                f"{SCHEMA_VERSION} (upgrade adaret)")
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        if raw.get("seq_len") == "dynamic":
            del raw["seq_len"]
        missing = [name for name, f in known.items() if _required(f) and name not in raw]
        if missing:
            raise MetadataError(f"{source}: adaret.{missing[0]} is missing")
        extra = {name: text for name, text in raw.items() if name not in known}
        try:
            values = {name: _decode(text, _KINDS.get(name, str), name) for name, text in raw.items() if name in known}
            return cls(**values, extra=extra)
        except MetadataError as exc:
            raise MetadataError(f"{source}: {exc}") from None

    @classmethod
    def from_props_if_any(cls, props: Mapping[str, str], source: str = "the graph") -> ExportMetadata | None:
        """None for a graph adaret did not export (tools such as the linter accept any ONNX file)."""
        return cls.from_props(props, source) if PREFIX + "form" in props else None

    @classmethod
    def from_model(cls, model: onnx.ModelProto, source: str = "the graph") -> ExportMetadata:
        return cls.from_props({p.key: p.value for p in model.metadata_props}, source)

    def write_to(self, model: onnx.ModelProto) -> None:
        """Replace the model's ``adaret.*`` entries with this metadata."""
        keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
        del model.metadata_props[:]
        model.metadata_props.extend(keep)
        for key, value in self.to_props().items():
            model.metadata_props.add(key=key, value=value)

    def updated(self, **changes: Any) -> ExportMetadata:
        return dataclasses.replace(self, **changes)


# How each non-string field is decoded; the JSON-valued ones (lists, dicts) are "json".
_KINDS: dict[str, Any] = {
    "budget": float, "training_budget": float, "seq_len": int, "max_positions": int, "opset": int,
    "schema_version": int, "schedule": "json", "keep_counts": "json", "label_names": "json",
    "input_names": "json", "output_names": "json", "vocabulary": "json", "budget_search": "json",
    "pass_report": "json", "question_answering": "json",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and all(map(_is_int, value))


# The JSON-valued fields whose shape validate() checks here (the name lists and the schedule have their own checks);
# None stands for an optional field's absence (keep_counts is not optional: its absence is {}).
_JSON_SHAPES: dict[str, tuple[Any, str]] = {
    "keep_counts": (lambda v: isinstance(v, dict) and all(map(_is_int_list, v.values())),
                    "a JSON object of integer lists"),
    "vocabulary": (lambda v: v is None or (isinstance(v, dict) and all(map(_is_int, v.values()))),
                   "a JSON object of integers"),
    "budget_search": (lambda v: v is None or isinstance(v, dict), "a JSON object"),
    "question_answering": (lambda v: v is None or (isinstance(v, dict) and set(v) == set(QA_FIELDS)
                                                   and all(_is_int(x) and x >= 1 for x in v.values())),
                           f"a JSON object of positive integers {', '.join(QA_FIELDS)}"),
    "pass_report": (lambda v: v is None or (isinstance(v, list) and all(isinstance(x, dict) for x in v)),
                    "a JSON list of objects"),
}


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _encode(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict | tuple) else str(value)


def _decode(text: str, kind: Any, name: str) -> Any:
    try:
        if kind == "json":
            return json.loads(text)
        value = kind(text)
    # json.JSONDecodeError is a ValueError, and so is a number over Python's 4300-digit limit; JSON nested deeper
    # than the recursion limit is a RecursionError
    except (TypeError, ValueError, RecursionError):
        raise MetadataError(f"adaret.{name} is not a valid {'JSON value' if kind == 'json' else kind.__name__}: "
                            f"{text[:60]!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise MetadataError(f"adaret.{name} is not finite: {text!r}")
    return value
