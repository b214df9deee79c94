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
from adaret.core.fileio import atomic_file

PLOT_NAME = "keep_schedule.png"


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


def check_batching(batch_size: int, max_length: int | None) -> None:
    """The calibration batch size and text length a library caller gives (the command line's types refuse the same
    values first)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AdaretError(f"--batch-size must be an integer >= 1, got {batch_size!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length < 2):
        raise AdaretError(f"--max-length must be an integer >= 2, got {max_length!r}")


def calibrate_schedule(checkpoint_dir: str | Path, data: str, *, samples: int = 512, split: str | None = None,
                       max_length: int | None = None, seed: int | None = None, batch_size: int = 8,
                       progress: bool = True) -> tuple[Any, ScheduleCalibration]:
    """Load a checkpoint, measure f_l on ``samples`` texts of ``data``; return (checkpoint, calibration)."""
    from adaret.calibration.data import calibration_texts, default_split
    from adaret.training.batching import Encoded
    from adaret.training.checkpoint import RetentionCheckpoint

    check_batching(batch_size, max_length)  # before the checkpoint loads
    checkpoint = RetentionCheckpoint.from_pretrained(checkpoint_dir)
    training = checkpoint.info.training
    seed = int(training.get("seed", 0)) if seed is None else seed
    max_length = int(training.get("max_length", 512)) if max_length is None else max_length
    max_length = min(max_length, checkpoint.model.encoder.max_positions)
    split = split or default_split(data)
    dataset = calibration_texts(data, samples=samples, split=split, seed=seed)
    encoded = Encoded(dataset, checkpoint.tokenizer, max_length)
    fractions, accuracy = measure_keep_fractions(checkpoint.model, encoded, batch_size, progress)
    source = {"data": data, "split": split, "samples": len(dataset), "max_length": max_length, "seed": seed}
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


def plot_schedule(calibration: ScheduleCalibration, path: str | Path, title: str = "") -> Path:
    """The decay pattern: measured f_l per layer, next to what the checkpoint held before."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    layers = list(range(1, len(calibration.fractions) + 1))
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    if calibration.previous and len(calibration.previous) == len(layers):
        ax.plot(layers, calibration.previous, "o--", color="grey", label="before (checkpoint)")
    ax.plot(layers, calibration.fractions, "o-", color="tab:blue",
            label=f"measured on {calibration.source.get('data', '?')} (n={calibration.source.get('samples', '?')})")
    for layer, f in zip(layers, calibration.fractions, strict=True):
        ax.annotate(f"{f:.2f}", (layer, f), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set(xlabel="encoder layer", ylabel="keep fraction f_l", ylim=(0, 1.08), xticks=layers,
           title=title or f"per-layer keep schedule (mean {calibration.budget:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path
