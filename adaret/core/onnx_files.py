"""Reading and writing ONNX files: atomically, with external data for large models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from adaret.core.constants import EXTERNAL_DATA_THRESHOLD
from adaret.core.fileio import ensure_writable_dir, staging_dir


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``path`` (and ``path.data`` for large models) so that nothing half-written is ever visible."""
    path = Path(path)
    ensure_writable_dir(path.parent)
    external = model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    staging = staging_dir(path.parent, f".{path.name}.")
    try:
        data_name = f"{path.name}.data"
        onnx.save_model(model, staging / path.name, save_as_external_data=external, all_tensors_to_one_file=True,
                        location=data_name)
        if external:  # the data file first: a model file must never point at missing data
            os.replace(staging / data_name, path.parent / data_name)
        os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
