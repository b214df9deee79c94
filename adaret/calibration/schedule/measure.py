"""Schedule calibration: re-measure the per-layer keep fractions f_l of a checkpoint on data.

The export's top-M rule keeps ``K_l = max(2, ceil(f_l * n))`` tokens at layer l. The fractions are what the gates
keep on average (relaxed mode, deterministic gates: the mean over examples of E[kept real tokens] / real tokens),
so they depend on the text: a new domain gets its own schedule from the same gates, with no retraining. The
result is written into a checkpoint's config (``schedule.keep_fractions``), which the export reads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaret.core.errors import AdaretError


@dataclass
class ScheduleCalibration:
    fractions: list[float]  # measured f_l, one per encoder layer
    previous: list[float]  # what the checkpoint held before
    accuracy: float  # relaxed-mode accuracy on the calibration texts (labels are read, not trained on)
    source: dict[str, Any] = field(default_factory=dict)  # data, split, samples, max_length, seed

    @property
    def budget(self) -> float:
        return sum(self.fractions) / len(self.fractions)


def measure_keep_fractions(model, encoded, batch_size: int = 8, progress: bool = True) -> tuple[list[float], float]:
    """f_l and relaxed accuracy, by the training code's own evaluation (one definition of f_l everywhere)."""
    from adaret.training.evaluate import evaluate_relaxed

    result = evaluate_relaxed(model, encoded, batch_size=batch_size, progress=progress)
    return [float(f) for f in result.keep_fractions], float(result.accuracy)


def calibrate_schedule(checkpoint_dir: str | Path, data: str, *, samples: int = 512, split: str | None = None,
                       max_length: int | None = None, seed: int | None = None, batch_size: int = 8,
                       progress: bool = True) -> tuple[Any, ScheduleCalibration]:
    """Load a checkpoint, measure f_l on ``samples`` texts of ``data``; return (checkpoint, calibration)."""
    from adaret.calibration.data import calibration_texts, check_batching, default_split
    from adaret.training.batching import Encoded
    from adaret.training.checkpoint import RetentionCheckpoint

    check_batching(batch_size, max_length)  # before the checkpoint loads
    checkpoint = RetentionCheckpoint.from_pretrained(checkpoint_dir)
    # the checkpoint's own split (its seed and fold), unless another seed is asked for
    keys = checkpoint.info.eval_split if seed is None else {"seed": seed, "eval_fold": 0}
    seed, fold = keys["seed"], keys["eval_fold"]
    positions = checkpoint.model.encoder.max_positions
    max_length = checkpoint.max_length if max_length is None else min(max_length, positions)
    split = split or default_split(data)
    dataset = calibration_texts(data, samples=samples, split=split, seed=seed, eval_fold=fold)
    encoded = Encoded(dataset, checkpoint.tokenizer, max_length)
    fractions, accuracy = measure_keep_fractions(checkpoint.model, encoded, batch_size, progress)
    source = {"data": data, "split": split, "samples": len(dataset), "max_length": max_length, "seed": seed,
              "eval_fold": fold}
    previous = [float(f) for f in checkpoint.info.schedule.get("keep_fractions", [])]
    return checkpoint, ScheduleCalibration(fractions, previous, accuracy, source)


def write_calibrated_checkpoint(checkpoint, calibration: ScheduleCalibration, out: str | Path,
                                overwrite: bool = False) -> Path:
    """Save ``checkpoint`` with the measured schedule to ``out``.

    ``out`` may be the checkpoint's own directory: then only its ``config.json`` is rewritten (the weights and the
    tokenizer are the same) and no other file there is touched. Another directory gets the whole checkpoint; an
    existing non-empty one only with ``overwrite``, and only the checkpoint's files in it are replaced.
    """
    from adaret.training.checkpoint import library_versions, save_checkpoint_config

    info = copy.copy(checkpoint.info)
    info.schedule = dict(info.schedule) | {
        "keep_fractions": calibration.fractions,
        "measured_on": f"{calibration.source['data']}:{calibration.source['split']}"
                       f"[:{calibration.source['samples']}](seed={calibration.source['seed']})",
        "budget": calibration.budget,
        "calibration": {**calibration.source, "previous_keep_fractions": calibration.previous,
                        "relaxed_accuracy": calibration.accuracy, "versions": library_versions()},
    }
    checkpoint.info = info
    try:
        if checkpoint.path is not None and Path(out).resolve() == Path(checkpoint.path).resolve():
            return save_checkpoint_config(checkpoint)
        return checkpoint.save_pretrained(out, overwrite=overwrite)
    except OSError as exc:
        raise AdaretError(f"cannot write checkpoint {out}: {exc.strerror or exc}") from None
