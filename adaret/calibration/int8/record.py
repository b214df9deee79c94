"""The calibration record: a JSON file next to the quantised model that says how to reproduce it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from adaret import __version__
from adaret.core.fileio import atomic_file

RECORD_SUFFIX = ".calibration.json"
FORMAT = "adaret-calibration-record"
VERSIONED = ("onnx", "onnxruntime", "onnx-ir", "numpy", "tokenizers", "transformers", "torch", "nvidia-modelopt")


def record_path(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name.removesuffix(".onnx") + RECORD_SUFFIX)


def scales_sha256(model: onnx.ModelProto | str | Path) -> str:
    """sha256 over every Q/DQ scale and zero point (name, dtype, shape, bytes), in name order.

    Two runs with the same data, samples and method give the same digest; any change in a range shows up.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    inits = {t.name: t for t in model.graph.initializer}
    names = sorted({name for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                    for name in node.input[1:3] if name in inits})
    digest = hashlib.sha256()
    for name in names:
        array = np.ascontiguousarray(numpy_helper.to_array(inits[name]))
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"adaret": __version__}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class CalibrationRecord:
    model: str  # the quantised file's name
    source_model: str
    source_sha256: str
    checkpoint_sha256: str
    backend: str  # ort | modelopt
    method: str  # entropy | minmax | percentile
    data: dict[str, Any]  # dataset, split, samples, seed, max_length, batch_size, texts_sha256
    quantization: dict[str, Any]  # format, types, symmetric, per_channel, quantized/excluded nodes
    scales_sha256: str
    model_sha256: str
    versions: dict[str, str] = field(default_factory=library_versions)
    command: str = ""
    verification: dict[str, Any] | None = None  # fp32 vs INT8 on held-out texts, when measured
    notes: list[str] = field(default_factory=list)
    format: str = FORMAT

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, path: str | Path) -> CalibrationRecord:
        return cls(**json.loads(Path(path).read_text()))


def texts_sha256(texts: list[str]) -> str:
    """Identifies the exact calibration texts (and their order), so a rerun can check it saw the same data."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()
