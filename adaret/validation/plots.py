"""The report's PNG plots: accuracy and latency against budget, and kept tokens per layer (the decay)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a server or in CI
import matplotlib.pyplot as plt

BACKEND_STYLE = {"pytorch-hard": ("tab:blue", "o"), "onnxruntime": ("tab:orange", "s"), "tensorrt": ("tab:green", "^")}


def _series(rows: Sequence[dict], backend: str, key: str) -> tuple[list[float], list[float]]:
    points = sorted((r["budget"], r[key]) for r in rows if r["backend"] == backend and r.get(key) is not None)
    return [p[0] for p in points], [p[1] for p in points]


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_vs_budget(rows: Sequence[dict], full_accuracy: float, floor: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for backend, (color, marker) in BACKEND_STYLE.items():
        x, y = _series(rows, backend, "accuracy")
        if x:
            # hollow, larger markers for the reference so that an identical deployed point stays visible
            hollow = {"markerfacecolor": "none", "markersize": 10} if backend == "pytorch-hard" else {}
            ax.plot(x, y, marker=marker, color=color, label=backend, **hollow)
    ax.axhline(full_accuracy, color="black", linestyle="--", label=f"full model ({full_accuracy:.3f})")
    ax.axhline(floor * full_accuracy, color="red", linestyle=":", label=f"floor ({floor:.0%} of full)")
    ax.set(xlabel="budget (mean fraction of tokens kept per layer)", ylabel="accuracy",
           title="Accuracy against budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def latency_vs_budget(rows: Sequence[dict], full_row: dict, batch_size: int, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for backend, (color, marker) in BACKEND_STYLE.items():
        x, p50 = _series(rows, backend, "latency_p50_ms")
        _, p95 = _series(rows, backend, "latency_p95_ms")
        if x:
            ax.plot(x, p50, marker=marker, color=color, label=f"{backend} p50")
            ax.plot(x, p95, marker=marker, color=color, linestyle=":", alpha=0.6, label=f"{backend} p95")
    ax.axhline(full_row["latency_p50_ms"], color="black", linestyle="--", label="pytorch-full p50")
    ax.set(xlabel="budget", ylabel=f"ms per batch of {batch_size}", title="Latency against budget (eval batches)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def kept_tokens_per_layer(keep_counts: dict[float, list[int]], seq_len: int, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for budget, counts in sorted(keep_counts.items(), reverse=True):
        layers = list(range(1, len(counts) + 1))
        ax.plot(layers, counts, marker="o", label=f"budget {budget:g}")
    ax.set(xlabel="encoder layer", ylabel=f"tokens processed (of {seq_len})",
           title=f"Kept tokens per layer at n = {seq_len}")
    ax.set_xticks(range(1, max(len(c) for c in keep_counts.values()) + 1))
    ax.set_ylim(0, seq_len * 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
