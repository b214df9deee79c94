"""INT8 calibration of an export from the checkpoint it was exported from.

The checkpoint's config is checked by the code that loads checkpoints, and its tokenizer is a transformers
tokenizer; both import torch or transformers, which ``adaret.calibration.int8`` must not. So they are read here,
on the torch side, and handed to the INT8 flow as plain values (``CheckpointParts``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from adaret.calibration.int8.quantize import CheckpointParts, QuantizeConfig, QuantizeResult
from adaret.calibration.int8.quantize import quantize as quantize_with
from adaret.core.errors import AdaretError

__all__ = ["CheckpointParts", "QuantizeConfig", "QuantizeResult", "quantize", "read_checkpoint"]


def quantize(config: QuantizeConfig) -> QuantizeResult:
    """``adaret calibrate`` without --schedule-only: QDQ INT8 of ``config.onnx``, calibrated with the tokenizer and
    data settings of ``config.checkpoint``."""
    return quantize_with(config, read_checkpoint)


def read_checkpoint(checkpoint_dir: str | Path) -> CheckpointParts:
    """The checkpoint's config, tokenizer and digest, without loading its weights into torch."""
    from adaret.modeling.hf_loading import load_tokenizer
    from adaret.training.checkpoint import CONFIG_NAME, checkpoint_sha256, read_info

    checkpoint_dir = Path(checkpoint_dir)
    if not (checkpoint_dir / CONFIG_NAME).is_file():
        raise AdaretError(f"checkpoint {checkpoint_dir} not found (no {CONFIG_NAME})")
    info = asdict(read_info(checkpoint_dir))  # the same checks of every field as loading the checkpoint
    try:
        tokenizer = load_tokenizer(checkpoint_dir)
        digest = checkpoint_sha256(checkpoint_dir)
    except (OSError, ValueError) as exc:
        raise AdaretError(f"checkpoint {checkpoint_dir}: cannot read it ({exc})") from None
    return CheckpointParts(info, tokenizer, digest)
