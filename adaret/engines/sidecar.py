"""The JSON sidecar next to every plan: what the plan was built from, with what, for which GPU.

A TensorRT plan only deserialises with the TensorRT version that built it, and is tuned for (and, without
hardware compatibility, only valid on) the GPU model it was built on. The sidecar records both, so that a
runtime can refuse a foreign plan with a clear message instead of a deserialisation error, plus what the
runtime needs to use the plan (profiles, budget and schedule, I/O names, labels). Standard library only:
the edge runtime imports this without onnx or torch.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaret.core.errors import AdaretError
from adaret.core.fileio import atomic_file
from adaret.core.metadata import ExportMetadata
from adaret.engines.profiles import Profile

SCHEMA_VERSION = 1
SUFFIX = ".json"
AMPERE_PLUS_MIN_CC = (8, 0)


@dataclass
class EngineSidecar:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "major.minor", e.g. "9.0"
    precision: str
    target: str
    profiles: list[Profile]
    device_memory_bytes: list[int]  # ICudaEngine.get_device_memory_size_for_profile_v2, per profile
    onnx_sha256: str
    onnx_file: str
    plan_sha256: str | None = None  # ties the sidecar to its plan: a rebuild interrupted between the two shows
    budget: float | None = None
    training_budget: float | None = None
    schedule: dict[str, Any] | None = None
    seq_len: int | None = None
    keep_counts: dict[str, list[int]] | None = None
    checkpoint_sha256: str | None = None
    label_names: list[str] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    task: str = "sequence-classification"  # the export's task; a question-answering plan also records its windows
    question_answering: dict[str, int] | None = None
    hardware_compat: str | None = None  # "ampere+": runs on any GPU with compute capability >= 8.0
    dla_core: int | None = None
    decisions: dict[str, Any] = field(default_factory=dict)
    layer_summary: dict[str, Any] = field(default_factory=dict)
    adaret_version: str = ""
    built_at: str = ""
    build_seconds: float | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["profiles"] = [p.as_dict() for p in self.profiles]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "sidecar") -> EngineSidecar:
        if not isinstance(data, Mapping):
            raise AdaretError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise AdaretError(f"{source}: schema version {version!r} is newer than this adaret understands "
                              f"({SCHEMA_VERSION}); upgrade adaret")
        known = {f.name: f for f in dataclasses.fields(cls)}
        missing = [name for name, f in known.items() if _required(f) and name not in data]
        if missing:
            raise AdaretError(f"{source}: missing {', '.join(missing)}")
        values = {name: data[name] for name in known if name in data}  # unknown keys: from newer minor writers
        profiles = _list(values["profiles"], "profiles", source)
        for index, profile in enumerate(profiles):
            if not isinstance(profile, Mapping):
                raise AdaretError(f"{source}: profiles[{index}] must be an object, got {type(profile).__name__}")
        values["profiles"] = [Profile.from_dict(p) for p in profiles]
        _check_types(values, source)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str, *, source: str = "sidecar") -> EngineSidecar:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AdaretError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except (ValueError, RecursionError) as exc:  # a number over Python's 4300 digits; nesting past the limit
            raise AdaretError(f"{source} is not a sidecar adaret wrote ({str(exc).split(';')[0]})") from None
        return cls.from_dict(data, source=source)


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _list(value: Any, name: str, source: str) -> list:
    if not isinstance(value, list):
        raise AdaretError(f"{source}: {name} must be a list, got {type(value).__name__}")
    return value


_STR_FIELDS = ("tensorrt_version", "gpu_name", "compute_capability", "precision", "target", "onnx_sha256",
               "onnx_file")


def _check_types(values: dict[str, Any], source: str) -> None:
    for name in _STR_FIELDS:
        if not isinstance(values[name], str):
            raise AdaretError(f"{source}: {name} must be a string, got {values[name]!r}")
    hints = _field_types()
    for name, value in values.items():
        if name not in _STR_FIELDS and name not in ("profiles", "device_memory_bytes") and \
                not _conforms(value, hints[name]):
            raise AdaretError(f"{source}: {name} must be {_describe(hints[name])}, got {_preview(value)}")
    memory = _list(values["device_memory_bytes"], "device_memory_bytes", source)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in memory):
        raise AdaretError(f"{source}: device_memory_bytes must be non-negative integers, got {memory!r}")
    if len(memory) != len(values["profiles"]):
        raise AdaretError(f"{source}: {len(values['profiles'])} profile(s) but {len(memory)} device memory sizes")
    parse_compute_capability(values["compute_capability"])


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(EngineSidecar)


def _conforms(value: Any, hint: Any) -> bool:
    """``value``, read from JSON, has the field's annotated type; a float field takes any finite number."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, int | float) and _finite(value)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(k, args[0]) and _conforms(v, args[1])
                                               for k, v in value.items())
    return isinstance(value, origin or hint)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


_NOUNS = {str: "string", int: "integer", float: "finite number", bool: "boolean"}


def _describe(hint: Any) -> str:
    """A field's type in words: "a list of strings", "an object of lists of integers or null"."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    noun = _noun(hint)
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _noun(hint: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    s = "s" if plural else ""
    if origin is list:
        return f"list{s} of {_noun(args[0], True)}"
    if origin is dict:
        return f"object{s}" if args[1] is Any else f"object{s} of {_noun(args[1], True)}"
    return _NOUNS.get(hint, getattr(hint, "__name__", str(hint))) + s


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def sidecar_path(plan_path: str | Path) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + SUFFIX)


def write_sidecar(plan_path: str | Path, sidecar: EngineSidecar) -> Path:
    path = sidecar_path(plan_path)
    with atomic_file(path) as tmp:
        tmp.write_text(sidecar.to_json())
    return path


def load_sidecar(plan_path: str | Path) -> EngineSidecar:
    path = sidecar_path(plan_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AdaretError(f"{Path(plan_path).name} has no sidecar ({path.name} is missing): rebuild the plan with "
                          f"adaret build, which writes both") from None
    except OSError as exc:
        raise AdaretError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AdaretError(f"{path} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}): it is not a "
                          f"sidecar adaret wrote; rebuild the plan with adaret build") from None
    return EngineSidecar.from_json(text, source=str(path))


def parse_compute_capability(text: str) -> tuple[int, int]:
    try:
        major, minor = str(text).strip().split(".")
        return int(major), int(minor)
    except ValueError:
        raise AdaretError(f"bad compute capability {text!r}: expected MAJOR.MINOR, e.g. 8.6") from None


def _release(version: str) -> tuple[str, ...]:
    """Plans are tied to the TensorRT release (major.minor.patch); a fourth (build) field does not matter."""
    return tuple(str(version).strip().split(".")[:3])


def _same_gpu(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def check_compatible(sidecar: EngineSidecar, *, tensorrt_version: str, gpu_name: str,
                     compute_capability: str) -> None:
    """Raise AdaretError, naming both sides, when this machine cannot (or should not) run the plan."""
    built_trt, built_gpu, built_cc_text = (_one_line(sidecar.tensorrt_version), _one_line(sidecar.gpu_name),
                                           _one_line(sidecar.compute_capability))
    here_trt, here_gpu, here_cc_text = _one_line(tensorrt_version), _one_line(gpu_name), _one_line(compute_capability)
    if _release(sidecar.tensorrt_version) != _release(tensorrt_version):
        raise AdaretError(f"the plan was built with TensorRT {built_trt}, but this machine has TensorRT {here_trt}: "
                          f"plans only load on the TensorRT release that built them; rebuild it here with adaret build")
    built_cc, here_cc = parse_compute_capability(sidecar.compute_capability), parse_compute_capability(
        compute_capability)
    if sidecar.hardware_compat == "ampere+":
        if here_cc < AMPERE_PLUS_MIN_CC:
            raise AdaretError(f"the plan is hardware-compatible for Ampere and newer (built on {built_gpu}, "
                              f"compute capability {built_cc_text}), but this GPU is {here_gpu} (compute capability "
                              f"{here_cc_text}): rebuild it here")
        return
    if built_cc != here_cc or not _same_gpu(sidecar.gpu_name, gpu_name):
        raise AdaretError(f"the plan was built for {built_gpu} (compute capability {built_cc_text}), but this GPU is "
                          f"{here_gpu} (compute capability {here_cc_text}): rebuild it here, or build with "
                          f"--hardware-compat ampere+")


def _one_line(text: str) -> str:
    """A name from a sidecar (or a driver) as it goes into a one-line message: whitespace runs, newlines
    included, become one space."""
    return " ".join(str(text).split())


def check_plan_matches(sidecar: EngineSidecar, plan_bytes: bytes, plan_name: str = "the plan") -> None:
    """Refuse a sidecar that describes another build of the plan (it records the plan's sha256)."""
    if sidecar.plan_sha256 is not None and hashlib.sha256(plan_bytes).hexdigest() != sidecar.plan_sha256:
        raise AdaretError(f"{plan_name} does not match its sidecar (sha256 differs): the two come from different "
                          f"builds; rebuild with adaret build")


def fields_from_metadata(metadata: ExportMetadata | None) -> dict[str, Any]:
    """Sidecar fields from an export's metadata; none for a graph adaret did not export."""
    if metadata is None:
        return {}
    return {"budget": metadata.budget, "training_budget": metadata.training_budget, "schedule": metadata.schedule,
            "seq_len": metadata.seq_len, "keep_counts": metadata.keep_counts or None,
            "checkpoint_sha256": metadata.checkpoint_sha256 or None, "label_names": list(metadata.label_names),
            "input_names": list(metadata.input_names), "output_names": list(metadata.output_names),
            "task": metadata.task, "question_answering": metadata.question_answering}
