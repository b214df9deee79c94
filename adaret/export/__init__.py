"""Deterministic top-M inference module, ONNX export (dynamic and static forms), metadata and parity."""

from adaret.export.inference import TopMInference
from adaret.export.metadata import read_metadata, write_metadata
from adaret.export.pipeline import ExportConfig, ExportResult, run_export

__all__ = ["ExportConfig", "ExportResult", "TopMInference", "read_metadata", "run_export", "write_metadata"]
