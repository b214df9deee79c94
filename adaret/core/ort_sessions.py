"""The one ONNX Runtime session factory: every stage's checks, probes and timings open graphs through it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import onnxruntime as ort

if TYPE_CHECKING:
    import onnx

CPU = ["CPUExecutionProvider"]


def cpu_options(threads: int | None = None, *, log_level: int = 3,
                optimization: ort.GraphOptimizationLevel | None = None) -> ort.SessionOptions:
    """Options for a CPU session. ``log_level`` 3 keeps ONNX Runtime's warnings (e.g. on unused initialisers,
    which our passes leave by design) out of the user's terminal; errors still raise."""
    options = ort.SessionOptions()
    options.log_severity_level = log_level
    if threads:
        options.intra_op_num_threads = threads
    if optimization is not None:
        options.graph_optimization_level = optimization
    return options


def make_session(model: str | Path | bytes | onnx.ModelProto, options: ort.SessionOptions | None = None, *,
                 threads: int | None = None, providers: list[str] | None = None) -> ort.InferenceSession:
    """A session for a path, serialised bytes or a ModelProto (serialised here: ORT takes bytes, not protos)."""
    if not isinstance(model, str | Path | bytes):
        model = model.SerializeToString()
    source = str(model) if isinstance(model, Path) else model
    # No fallback: on a failure ONNX Runtime would print two lines of its own to stdout ("EP Error ... Falling
    # back") and retry on the providers it was just given; the caller's one-line error is all a user should see.
    return ort.InferenceSession(source, options or cpu_options(threads), providers=providers or CPU,
                                enable_fallback=0)
