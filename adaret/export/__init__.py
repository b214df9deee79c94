"""Deterministic top-M inference module, ONNX export (dynamic and static forms) and the parity check.

Names are imported lazily, so that ``import adaret.export`` does not load torch before it is needed.
"""

from __future__ import annotations

from adaret.core.lazy import by_module, lazy_attributes

_EXPORTS = by_module({
    "adaret.export.config": ("ExportConfig",),
    "adaret.export.pipeline": ("ExportResult", "run_export"),
    "adaret.export.inference": ("TopMInference",),
    "adaret.export.seq2seq": ("SummarizationExportResult", "run_summarization_export"),
})

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
