"""Loaders and runners, after Polygraphy: a loader builds a backend object, a runner runs feeds through it.

Every runner has the same interface, so the Session (and a comparison) does not care which backend it has:
``input_specs`` (name -> InputSpec), ``output_names``, ``output_shapes`` (name -> shape, None where dynamic or
unknown), ``metadata`` (the ``adaret.*`` entries, decoded) and ``infer(feeds) -> {output name: array}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from adaret.core.errors import AdaretError
from adaret.core.metadata import ExportMetadata
from adaret.core.ort_sessions import make_session
from adaret.runtime.options import select_providers, session_options

ORT_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, *(
    getattr(ort_state, name) for name in ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel",
                                          "NoSuchFile", "NotImplemented", "RuntimeException", "EPFail")
    if hasattr(ort_state, name)))
NOT_UTF8 = "its names or metadata are not UTF-8 (a corrupt file?); re-export it"
ORT_DTYPES = {"tensor(int64)": np.dtype(np.int64), "tensor(int32)": np.dtype(np.int32),
              "tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}


@dataclass(frozen=True)
class InputSpec:
    """One model input: its dtype and shape, with None for a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]


class Runner(Protocol):
    input_specs: dict[str, InputSpec]
    output_names: list[str]
    output_shapes: dict[str, tuple[int | None, ...]]
    metadata: ExportMetadata

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class SessionFromOnnx:
    """Loader: an ``ort.InferenceSession`` for an ONNX file, with the runtime's session options."""

    def __init__(self, path: str | Path, *, memory: str | None = None, threads: int | None = None,
                 providers: list[str] | None = None):
        self.path = Path(path)
        self.options = session_options(memory, threads) if memory else session_options(threads=threads)
        self.providers = providers or select_providers()

    def __call__(self) -> ort.InferenceSession:
        if not self.path.is_file():
            raise AdaretError(f"model file {self.path} does not exist")
        try:
            return make_session(self.path, self.options, providers=self.providers)
        except ORT_ERRORS as exc:
            raise AdaretError(f"cannot load {self.path.name}: not a valid ONNX model, or a truncated or corrupt "
                              f"file ({first_line(exc)})") from None
        except UnicodeDecodeError:  # the binding decodes an error message that quotes a non-UTF-8 name
            raise AdaretError(f"cannot load {self.path.name}: {NOT_UTF8}") from None


class OrtRunner:
    """Runs feeds through an ONNX Runtime session."""

    def __init__(self, session: ort.InferenceSession | SessionFromOnnx):
        name = session.path.name if isinstance(session, SessionFromOnnx) else "the model"
        self.session = session() if callable(session) else session
        try:  # the binding decodes names and metadata as UTF-8 only when they are read
            self.input_specs = {i.name: InputSpec(i.name, ORT_DTYPES.get(i.type, np.dtype(np.int64)),
                                                  _dims(i.shape)) for i in self.session.get_inputs()}
            self.output_names = [o.name for o in self.session.get_outputs()]
            self.output_shapes = {o.name: _dims(o.shape) for o in self.session.get_outputs()}
            props = self.session.get_modelmeta().custom_metadata_map
        except UnicodeDecodeError:
            raise AdaretError(f"cannot load {name}: {NOT_UTF8}") from None
        self.metadata = ExportMetadata.from_props(props)

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self.session.run(self.output_names, dict(feeds))
        except ORT_ERRORS as exc:
            raise AdaretError(f"ONNX Runtime could not run the model: {first_line(exc)}") from None
        return dict(zip(self.output_names, outputs, strict=True))


class TrtRunner:
    """Runs feeds through a TensorRT plan with ``adaret.engines.trt_session.TrtPlanRunner``, an adapter over
    Polygraphy's ``TrtRunner`` (the same path as ``adaret compare``).

    The plan runner reads the plan's JSON sidecar and refuses a plan built for another GPU or TensorRT release,
    naming both. The engines stage is imported here, not at module level: an ONNX-only deployment never needs it.
    """

    def __init__(self, plan_path: str | Path):
        self.path = Path(plan_path)
        if not self.path.is_file():
            raise AdaretError(f"plan file {self.path} does not exist")
        from adaret.engines.trt_session import TrtPlanRunner

        self.runner = TrtPlanRunner(self.path)
        sidecar = self.runner.sidecar
        self.metadata = metadata_from_sidecar(sidecar)
        self.device_memory_bytes = sidecar.device_memory_bytes
        self.output_names = list(self.runner.output_names)
        self.output_shapes: dict[str, tuple[int | None, ...]] = {}  # the plan's are not read: checked on each run
        self.input_specs = {name: InputSpec(name, np.dtype(np.int64), (None, sidecar.seq_len))
                            for name in self.runner.input_names}
        self.providers = ["TensorRT"]

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner.run(dict(feeds))


def _dims(shape: Any) -> tuple[int | None, ...]:
    """ONNX Runtime's shape: an int per fixed dimension, a name or None per dynamic one."""
    return tuple(d if isinstance(d, int) else None for d in shape or ())


def metadata_from_sidecar(sidecar: Any) -> ExportMetadata:
    """A plan's sidecar carries what an export's metadata carries: labels, budget, schedule, bucket."""
    if sidecar.budget is None:
        raise AdaretError("the plan's sidecar records no budget: rebuild the plan from an adaret export")
    return ExportMetadata(form="dynamic" if sidecar.seq_len is None else "static", budget=float(sidecar.budget),
                          seq_len=sidecar.seq_len, training_budget=sidecar.training_budget,
                          schedule=sidecar.schedule, keep_counts=sidecar.keep_counts or {},
                          checkpoint_sha256=sidecar.checkpoint_sha256 or "", label_names=list(sidecar.label_names),
                          input_names=list(sidecar.input_names), output_names=list(sidecar.output_names),
                          task=sidecar.task, question_answering=sidecar.question_answering)
