"""What validate and bench share: the eval texts, the exact batches every backend sees, timed runs, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaret.core.errors import AdaretError
from adaret.core.padding import PlannedBatch, bucket_widths, padded_batches
from adaret.runtime.memory import MemoryMeasurement, measure_peak_rss
from adaret.runtime.text import Encoded, TextEncoder
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.training.data import load_splits

Feeds = dict[str, np.ndarray]
Infer = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class EvalSet:
    name: str
    texts: list[str]
    labels: np.ndarray  # class indices in the model's label order


def load_eval_set(checkpoint: RetentionCheckpoint, data: str | None = None, max_examples: int | None = None,
                  text_column: str = "text", label_column: str = "label") -> EvalSet:
    """The held-out split the checkpoint was trained with (or ``data``'s, split with the same seed).

    ``max_examples`` takes an evenly spaced subset: the split is ordered by class, so a prefix would be one class.
    """
    training = checkpoint.info.training
    source = data or training.get("data", "bbc-news")
    split = load_splits(source, **checkpoint.info.eval_split, text_column=text_column,
                        label_column=label_column).eval
    split.announce_notes()
    model_labels = checkpoint.info.label_names
    missing = sorted(set(split.label_names) - set(model_labels))
    if missing:
        raise AdaretError(f"dataset {source} has labels the model does not know: {', '.join(missing)}")
    indices = list(range(len(split)))
    if max_examples is not None:
        if max_examples < 1:
            raise AdaretError(f"--max-examples must be >= 1, got {max_examples}")
        count = min(max_examples, len(indices))
        indices = [indices[(i * len(indices)) // count] for i in range(count)]
    labels = np.array([model_labels.index(split.label_names[split.labels[i]]) for i in indices], dtype=np.int64)
    return EvalSet(split.name, [split.texts[i] for i in indices], labels)


def encode_texts(checkpoint_dir: Path, texts: Sequence[str], max_length: int) -> tuple[Encoded, int]:
    """Token ids with the tokenizer file the runtime uses (``tokenizers``), so every backend gets the same ids."""
    encoder = TextEncoder.from_dir(checkpoint_dir)
    return encoder.encode(texts, max_length), encoder.pad_id


def make_batches(encoded: Encoded, pad_id: int, batch_size: int, max_length: int,
                 widths: Sequence[int] | None = None) -> list[tuple[PlannedBatch, Feeds]]:
    return list(padded_batches(encoded.ids, widths or bucket_widths(max_length), batch_size, pad_id))


@dataclass
class RunResult:
    logits: np.ndarray  # [examples, classes], in example order
    batch_seconds: list[float] = field(default_factory=list)


def run_batches(infer: Infer, batches: Sequence[tuple[PlannedBatch, Feeds]], input_names: Sequence[str]) -> RunResult:
    """Every batch once (after one untimed warm-up on the first), timing each call."""
    count = sum(len(batch.indices) for batch, _ in batches)
    select = list(input_names)
    infer({name: batches[0][1][name] for name in select})
    logits: np.ndarray | None = None
    seconds = []
    for batch, feeds in batches:
        started = time.perf_counter()
        out = infer({name: feeds[name] for name in select})["logits"]
        seconds.append(time.perf_counter() - started)
        if logits is None:
            logits = np.zeros((count, out.shape[1]), dtype=np.float32)
        logits[batch.indices] = out
    assert logits is not None
    return RunResult(logits, seconds)


def quality(result: RunResult, labels: np.ndarray, full: np.ndarray, reference: np.ndarray | None = None) -> dict:
    """Accuracy, agreement with the full model, logit differences and batch latency of one run."""
    predicted = result.logits.argmax(1)
    row: dict[str, Any] = {
        "accuracy": round(float((predicted == labels).mean()), 4),
        "agreement_with_full": round(float((predicted == full.argmax(1)).mean()), 4),
        "max_abs_logit_diff_vs_full": float(np.abs(result.logits - full).max()),
    }
    if reference is not None:
        row["max_abs_logit_diff_vs_reference"] = float(np.abs(result.logits - reference).max())
        row["agreement_with_reference"] = round(float((predicted == reference.argmax(1)).mean()), 4)
    return row | latency_summary(result.batch_seconds, len(result.logits))


def latency_summary(seconds: Sequence[float], examples: int) -> dict:
    ms = 1000 * np.asarray(seconds)
    return {"latency_p50_ms": round(float(np.percentile(ms, 50)), 2),
            "latency_p95_ms": round(float(np.percentile(ms, 95)), 2),
            "throughput_per_s": round(examples / float(np.sum(seconds)), 2)}


def memory_mib(target: str, kwargs: dict, trials: int = 1) -> dict:
    """Peak RSS above the loaded model, in MiB: the median of ``trials`` fresh processes (and the spread)."""
    runs: list[MemoryMeasurement] = [measure_peak_rss(target, kwargs) for _ in range(trials)]
    values = sorted(m.peak_delta_mib for m in runs)
    row = {"peak_mib": round(float(np.median(values)), 1), "method": runs[0].method}
    if trials > 1:
        row |= {"peak_mib_min": round(values[0], 1), "peak_mib_max": round(values[-1], 1), "trials": trials}
    return row


def ort_memory(model: str, batch: int, seq_len: int, threads: int | None) -> dict:
    """A graph's peak memory as both reports show it: the runtime's default options (CPU arena off) and ONNX
    Runtime's own arena, each in a fresh process."""
    kwargs = {"model": model, "batch": batch, "seq_len": seq_len, "threads": threads}
    default = memory_mib("adaret.runtime.memory:ort_workload", kwargs)
    arena = memory_mib("adaret.runtime.memory:ort_workload", kwargs | {"memory": "arena"})
    return {"peak_memory_mib": default["peak_mib"], "peak_memory_mib_arena": arena["peak_mib"],
            "memory_method": "peak RSS delta, " + default["method"]}
