"""Deterministic top-M inference module, ONNX export (dynamic and static forms), metadata and parity.

Names are imported lazily: ``adaret.export.metadata`` needs only onnx, and later stages read metadata
without paying for (or requiring) torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExportConfig": "adaret.export.pipeline",
    "ExportResult": "adaret.export.pipeline",
    "run_export": "adaret.export.pipeline",
    "TopMInference": "adaret.export.inference",
    "read_metadata": "adaret.export.metadata",
    "write_metadata": "adaret.export.metadata",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'adaret.export' has no attribute {name!r}")
