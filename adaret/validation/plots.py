"""The report's PNG plots: accuracy and latency against budget, kept tokens per layer (the decay), and for
summarization ROUGE per backend and speed against the full model."""

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


def _save_atomic(fig, path: Path) -> Path:
    """``_save`` through a temporary file renamed into place: a report directory never holds half a PNG."""
    from adaret.core.fileio import atomic_file

    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")  # the temporary name has no .png suffix to infer it from
    plt.close(fig)
    return path


def rouge_bars(rows: Sequence[dict], floor: float, path: Path) -> Path:
    """Summarization: ROUGE-1/2/L of every row, ROUGE-L with its 95% bootstrap interval, and the floor."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4))
    labels = [r["backend"] if r["backend"] == "pytorch-full" else f"{r['backend']}@{r['budget']:g}" for r in rows]
    width = 0.27
    for offset, (metric, color) in enumerate((("rouge1", "tab:blue"), ("rouge2", "tab:green"),
                                              ("rougeL", "tab:orange"))):
        x = [i + (offset - 1) * width for i in range(len(rows))]
        values = [r[metric] for r in rows]
        errors = None
        if metric == "rougeL":
            errors = [[max(0.0, v - r["rougeL_ci95"][0]) for v, r in zip(values, rows, strict=True)],
                      [max(0.0, r["rougeL_ci95"][1] - v) for v, r in zip(values, rows, strict=True)]]
        ax.bar(x, values, width, yerr=errors, capsize=3, color=color, label=metric.replace("rouge", "ROUGE-"))
    full = rows[0]["rougeL"]
    ax.axhline(floor * full, color="red", linestyle=":", label=f"ROUGE-L floor ({floor:.0%} of full)")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=15, fontsize=8)
    ax.set(ylabel="F-measure (%)", title="ROUGE per backend (ROUGE-L: 95% bootstrap interval)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save_atomic(fig, path)


def summarization_speed(rows: Sequence[dict], batch_size: int, path: Path) -> Path:
    """Summarization: the export at each budget against the full model (budget 1.0), one panel per measurement."""
    panels = (("encoder_ms", f"encoder, ms per batch of {batch_size}"),
              ("decoder_step_ms", "decoder, ms per generated token (step)"),
              ("fixed_steps_ms", "end to end, fixed steps (ms)"),
              ("cross_cache_mib", "cross-attention cache (MiB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    labels = [f"{r['budget']:g}" for r in rows]
    colors = ["gray" if r["budget"] >= 1.0 else "tab:orange" for r in rows]
    for ax, (key, title) in zip(axes, panels, strict=True):
        # the cache from its bytes: the MiB column is rounded, too coarse for the ratio of a small cache
        values = [r["cross_cache_bytes"] / 2**20 if key == "cross_cache_mib" else r[key] for r in rows]
        ax.bar(labels, values, color=colors)
        for x, (value, row) in enumerate(zip(values, rows, strict=True)):
            ratio = values[0] / value if value and row is not rows[0] else None
            shown = f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
            ax.annotate(shown + (f"\n({ratio:.2f}x)" if ratio else ""), (x, value), ha="center",
                        va="bottom", fontsize=7)
        ax.set(title=title, xlabel="budget")
        ax.title.set_fontsize(8)
        ax.set_ylim(0, max(values) * 1.3 if max(values) > 0 else 1)
        ax.grid(axis="y", alpha=0.3)
    return _save_atomic(fig, path)
