"""The decay pattern of a measured keep schedule, as a PNG next to the checkpoint."""

from __future__ import annotations

from pathlib import Path

from adaret.calibration.schedule.measure import ScheduleCalibration
from adaret.core.fileio import atomic_file

PLOT_NAME = "keep_schedule.png"


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
