"""``export.py --budget auto``: choose the deployment budget from an accuracy floor or a latency ceiling.

The budget is a deployment knob (the learned schedule is rescaled, nothing is retrained), so the search only
measures candidates and then runs the ordinary export (``run_export``) at the chosen one.

Accuracy mode (``--min-accuracy m``). On a validation half of the data, example i gives the paired difference

    d_i = c_b,i - m * c_1,i        c_b,i = 1 if the model at budget b gets example i right, else 0

where budget 1.0 is the same checkpoint and head with no token dropped. Budget b passes when the one-sided 95%
lower confidence bound on E[d] is non-negative:

    mean(d) - 1.645 * sd(d) / sqrt(N) >= 0        (sd with N - 1 degrees of freedom)

i.e. acc_b >= m * acc_1 is shown at 95% confidence (normal approximation). The pairing matters: both models see
the same examples and mostly agree, so sd(d) is the spread of their disagreements, far smaller than that of two
independent accuracies. Zero variance (identical answers, or N equal differences) leaves the bound at mean(d).
The search returns the smallest budget on the 0.01 grid in (floor, 1] that passes, by bisection: passing is
assumed monotone in the budget, one point above the choice is measured to check that, and any measured
inversion is reported. Candidates run in PyTorch's hard top-M mode: that is what the graph computes (the
export's parity gate holds ONNX Runtime to it within 1e-4), so no candidate needs exporting. The texts are
padded exactly as the runtime pads them, because K_l follows the padded length. The chosen budget's ratio is
measured again on the other, held-out half, so that the report shows whether the choice holds on data the
search never saw.

Latency mode (``--max-latency-ms X``). The largest budget (accuracy rises with the budget) whose graph, as the
export would write it (graph passes included), runs a synthetic full-length [batch, seq_len] input in at most
X ms (ONNX Runtime, the runtime's session options, median of timed runs after warm-up). Latency rises with the
budget; the same bisection runs on a 0.05 grid, so each point costs an export and a timing. ``batch`` only sets
the measured shape: the exported graph keeps a dynamic batch.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaret.core.errors import AdaretError
from adaret.core.io_spec import LOGITS
from adaret.core.metadata import ExportMetadata
from adaret.core.onnx_files import save_model
from adaret.export.inference import TopMInference
from adaret.export.onnx_export import export_module, keep_outputs
from adaret.export.parity import model_vocabulary
from adaret.export.pipeline import (
    ExportConfig,
    ExportResult,
    GraphOptimizer,
    deployment_schedule,
    run_export,
    token_scorer,
    validate_config,
    with_default_seq_lens,
)
from adaret.modeling import DENOMINATOR, KeepSchedule
from adaret.runtime.text import TruncationWarning
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.training.data import load_splits
from adaret.validation.evaluate import encode_texts, make_batches

Z_95 = 1.645  # one-sided 95% normal quantile
ACCURACY_STEP = 0.01
LATENCY_STEP = 0.05  # each latency point is an export: a coarser grid keeps the search to about 5 of them
DEFAULT_MAX_EXAMPLES = 400
LATENCY_WARMUP, LATENCY_RUNS = 3, 7
_TOLERANCE = 1e-12  # float rounding of mean(d) when the two models agree everywhere

Progress = Callable[[str], None]


@dataclass
class AutoBudgetConfig:
    """What ``--budget auto`` searches for; exactly one of ``min_accuracy`` and ``max_latency_ms``."""

    min_accuracy: float | None = None  # fraction of the full model's accuracy, in (0, 1]
    max_latency_ms: float | None = None  # at batch ExportConfig.batch (or 1) and the largest seq_len
    data: str | None = None  # None: the data source recorded in the checkpoint's training config
    text_column: str | None = None  # None: the recorded column (or "text")
    label_column: str | None = None
    max_examples: int = DEFAULT_MAX_EXAMPLES  # per half of the eval split
    batch_size: int = 8

    @property
    def mode(self) -> str:
        return "accuracy" if self.min_accuracy is not None else "latency"


@dataclass
class Point:
    """One measured budget: whether it meets the target, and what was measured."""

    budget: float
    passed: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    role: str = "bisection"  # or "check": measured after the search, to test monotonicity

    def as_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, **self.metrics, "passed": self.passed, "role": self.role}


@dataclass
class Search:
    chosen: float | None  # None: no grid point meets the target
    points: list[Point]
    notes: list[str]


# --- the statistics and the search (pure) ----------------------------------------------------------------


def paired_lower_bound(candidate: Sequence[bool] | np.ndarray, reference: Sequence[bool] | np.ndarray,
                       min_ratio: float, z: float = Z_95) -> float:
    """``mean(d) - z * sd(d) / sqrt(N)`` with ``d_i = candidate_i - min_ratio * reference_i`` (sd: ddof 1)."""
    c = np.asarray(candidate, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if c.shape != r.shape or c.ndim != 1:
        raise ValueError(f"need two per-example vectors of one length, got shapes {c.shape} and {r.shape}")
    if len(c) < 2:
        raise ValueError(f"a standard deviation needs at least 2 examples, got {len(c)}")
    d = c - min_ratio * r
    return float(d.mean() - z * d.std(ddof=1) / math.sqrt(len(d)))


def meets_floor(bound: float) -> bool:
    return bound >= -_TOLERANCE


def accuracy_point(budget: float, candidate: np.ndarray, reference: np.ndarray, min_ratio: float) -> Point:
    """Accuracy, ratio to the reference and the paired bound of one budget's per-example correctness."""
    accuracy, full = float(np.mean(candidate)), float(np.mean(reference))
    bound = paired_lower_bound(candidate, reference, min_ratio)
    ratio = accuracy / full if full > 0 else None
    return Point(budget, meets_floor(bound), {"accuracy": round(accuracy, 6),
                                              "ratio": None if ratio is None else round(ratio, 6),
                                              "lower_bound": round(bound, 6)})


def budget_grid(floor: float, step: float) -> list[float]:
    """Budgets ``k * step`` strictly above ``floor``, up to and including 1.0, led by the smallest reachable
    0.01 point: ``rescaled`` reaches every budget above the floor (the share of never-gated layers), and 1.0."""
    smallest = math.floor(floor / ACCURACY_STEP + 1e-9) + 1
    per = max(1, round(step / ACCURACY_STEP))
    steps = [k for k in range(smallest, 101) if k in (smallest, 100) or k % per == 0]
    return [round(k * ACCURACY_STEP, 2) for k in steps] or [1.0]


def bisect_first(grid: Sequence[float], measure: Callable[[float], Point]) -> tuple[int | None, list[Point]]:
    """Index of the first grid point that passes, for a pass/fail that flips once, from fail to pass, along it.

    The last point is assumed to pass and is measured only if the search ends there, so a grid of n points
    costs at most ceil(log2(n)) measurements, plus that one.
    """
    points: list[Point] = []
    low, high = -1, len(grid) - 1  # invariant: grid[low] fails (or is before the grid), grid[high] passes
    while high - low > 1:
        middle = (low + high) // 2
        points.append(measure(grid[middle]))
        low, high = (low, middle) if points[-1].passed else (middle, high)
    if not any(p.budget == grid[high] for p in points):
        points.append(measure(grid[high]))
        if not points[-1].passed:
            return None, points
    return high, points


def monotonicity_notes(points: Sequence[Point], *, passes_upward: bool) -> list[str]:
    """Pairs of measured points that contradict a monotone target.

    ``passes_upward``: a larger budget should pass whenever a smaller one does (accuracy); otherwise the
    reverse (latency).
    """
    ordered = sorted(points, key=lambda p: p.budget)
    if not passes_upward:
        ordered.reverse()
    inversions = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:] if a.passed and not b.passed]
    if not inversions:
        return []
    failed = sorted({b.budget for _, b in inversions})
    passed = sorted({a.budget for a, _ in inversions})
    smaller_or_larger = "smaller" if passes_upward else "larger"
    return [f"not monotone in the budget: {_budgets(failed)} failed although the {smaller_or_larger} "
            f"{_budgets(passed)} passed; the choice may rest on noise (more data, or a margin on the target, "
            "would settle it)"]


def _budgets(values: Sequence[float]) -> str:
    return ("budget " if len(values) == 1 else "budgets ") + ", ".join(f"{v:g}" for v in values)


def search_smallest(grid: Sequence[float], measure: Callable[[float], Point]) -> Search:
    """The smallest passing grid point (accuracy mode), then one unmeasured point above it as a check."""
    index, points = bisect_first(grid, measure)
    if index is not None:
        measured = {p.budget for p in points}
        check = next((b for b in grid[index + 1:] if b not in measured), None)
        if check is not None:
            points.append(replace(measure(check), role="check"))
    chosen = None if index is None else grid[index]
    return Search(chosen, points, monotonicity_notes(points, passes_upward=True))


def search_largest(grid: Sequence[float], measure: Callable[[float], Point]) -> Search:
    """The largest passing grid point when passing flips from pass to fail as the budget grows (latency)."""
    descending = sorted(grid, reverse=True)
    index, points = bisect_first(descending, measure)
    chosen = None if index is None else descending[index]
    return Search(chosen, points, monotonicity_notes(points, passes_upward=False))


# --- data and the PyTorch evaluation of candidates -------------------------------------------------------


@dataclass(frozen=True)
class Examples:
    texts: list[str]
    labels: np.ndarray  # class indices in the checkpoint's label order


def validation_halves(checkpoint: RetentionCheckpoint, auto: AutoBudgetConfig) -> tuple[Examples, Examples, dict]:
    """The data's eval split (same seed as training), halved by a stable hash of each text into a validation
    half for the search and a held-out half for the check; each capped at ``max_examples``, evenly spaced."""
    training = checkpoint.info.training
    recorded = auto.data is None
    source = training.get("data") if recorded else auto.data
    if not source:
        raise AdaretError(f"--budget auto has no data to measure accuracy on: checkpoint {checkpoint.path} records "
                          "no training data source; pass --data (a built-in name or a .csv/.tsv/.jsonl/.json file)")
    columns = {name: getattr(auto, name) or (training.get(name) if recorded else None) or default
               for name, default in (("text_column", "text"), ("label_column", "label"))}
    keys = checkpoint.info.eval_split
    seed = keys["seed"]
    try:
        split = load_splits(str(source), **keys, **columns).eval
        split.announce_notes()
    except AdaretError as exc:
        if not recorded:
            raise
        raise AdaretError(f"{exc} (the data recorded in checkpoint {checkpoint.path}; --data picks other data)"
                          ) from None
    names = checkpoint.info.label_names
    if set(split.label_names) != set(names):
        raise AdaretError(f"the labels of {source} ({', '.join(sorted(split.label_names))}) are not the checkpoint's "
                          f"({', '.join(sorted(names))})")
    halves: tuple[list[int], list[int]] = ([], [])
    for index, text in enumerate(split.texts):
        halves[_held_out_side(text, seed)].append(index)
    if min(len(h) for h in halves) < 2:
        raise AdaretError(f"the eval split of {source} has {len(split)} example(s); --budget auto needs at least 2 "
                          "in each of its two halves (validation and held-out)")
    chosen = [_evenly_spaced(h, auto.max_examples) for h in halves]  # the split is ordered by class
    validation, held_out = (Examples([split.texts[i] for i in h],
                                     np.array([names.index(split.label_names[split.labels[i]]) for i in h]))
                            for h in chosen)
    info = {"source": str(source), "recorded_in_checkpoint": recorded, **keys, "eval_split": len(split),
            "validation_examples": len(validation.texts), "held_out_examples": len(held_out.texts)}
    return validation, held_out, info


def _held_out_side(text: str, seed: int) -> int:
    return hashlib.sha256(f"adaret-auto-budget:{seed}:{text}".encode()).digest()[0] & 1


def _evenly_spaced(indices: list[int], count: int) -> list[int]:
    count = min(count, len(indices))
    return [indices[(i * len(indices)) // count] for i in range(count)]


class HardEvaluator:
    """Per-example correctness of the deployed top-M module (PyTorch), on batches padded as the runtime pads
    them: each text to its own bucket width (the static buckets, or the next multiple of 32), since K_l follows
    the padded length.

    The layers before the first gate run on every token at every budget, so their output is computed once per
    batch and kept (``RetentionModel.unpruned_prefix``): each further budget runs only the gated layers. That is
    the same arithmetic on the same tensors, so the answers are those of a whole forward. It holds padded length x
    hidden floats per example in memory, and is skipped for a scorer that reads attention.
    """

    def __init__(self, checkpoint: RetentionCheckpoint, config: ExportConfig, examples: Examples,
                 batch_size: int = 8):
        static = sorted(config.seq_lens or ()) if config.static else None
        max_length = static[-1] if static else checkpoint.max_length
        with warnings.catch_warnings():  # the runtime truncates long texts the same way
            warnings.simplefilter("ignore", TruncationWarning)
            encoded, pad_id = encode_texts(checkpoint.path, examples.texts, max_length)
        self.batches = make_batches(encoded, pad_id, batch_size, max_length, static)
        self.labels = examples.labels
        self.model = checkpoint.model.eval()
        self.scorer = token_scorer(config.scorer, checkpoint)
        self.input_names = TopMInference(self.model, full_schedule(checkpoint)).input_names
        self.reuses_prefix = self.scorer is None or not self.scorer.needs_attention
        self._prefixes: dict[int, torch.Tensor] = {}
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def correct(self, schedule: KeepSchedule) -> np.ndarray:
        if schedule.numerators not in self._cache:
            predicted = np.empty(len(self.labels), dtype=np.int64)
            for index, (batch, feeds) in enumerate(self.batches):
                predicted[batch.indices] = self._logits(index, feeds, schedule).argmax(1)
            self._cache[schedule.numerators] = predicted == self.labels
        return self._cache[schedule.numerators]

    @torch.inference_mode()
    def _logits(self, index: int, feeds: dict[str, np.ndarray], schedule: KeepSchedule) -> np.ndarray:
        inputs = [torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in self.input_names]
        input_ids, attention_mask, token_type_ids = (*inputs, None)[:3]
        prefix = None
        if self.reuses_prefix:
            if index not in self._prefixes:
                self._prefixes[index] = self.model.unpruned_prefix(input_ids, attention_mask, token_type_ids)
            prefix = self._prefixes[index]
        out = self.model.forward_hard(input_ids, attention_mask, token_type_ids, schedule, scorer=self.scorer,
                                      prefix=prefix)
        return out.logits.float().numpy()


def full_schedule(checkpoint: RetentionCheckpoint) -> KeepSchedule:
    return KeepSchedule((DENOMINATOR,) * checkpoint.model.num_layers)


# --- latency of an exported candidate --------------------------------------------------------------------


def median_latency_ms(call: Callable[[], object], warmup: int = LATENCY_WARMUP, runs: int = LATENCY_RUNS) -> float:
    """Median wall time of ``runs`` calls after ``warmup`` untimed ones (first-run allocations, kernel choice)."""
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    return 1000 * statistics.median(seconds)


class LatencyProbe:
    """Exports the graph a budget would deploy (graph passes included; no parity check: only its speed is
    wanted) and times it with the runtime's ONNX Runtime session on a synthetic full-length input."""

    def __init__(self, checkpoint: RetentionCheckpoint, config: ExportConfig, batch: int, seq_len: int, work: Path,
                 optimizer: GraphOptimizer | None = None):
        self.checkpoint, self.config, self.batch, self.seq_len, self.work = checkpoint, config, batch, seq_len, work
        self.optimizer = optimizer
        self.max_positions = checkpoint.model.encoder.max_positions
        self.scorer = token_scorer(config.scorer, checkpoint)
        self.vocab = model_vocabulary(checkpoint.model, checkpoint.tokenizer)

    def __call__(self, budget: float) -> float:
        from adaret.runtime import load
        from adaret.runtime.memory import synthetic_feeds

        config = self.config
        schedule = _schedule_at(self.checkpoint, budget, config.checkpoint_dir)
        module = TopMInference(self.checkpoint.model, schedule, with_positions=True, scorer=self.scorer).eval()
        seq_len = self.seq_len if config.static else None
        proto = export_module(module, seq_len=seq_len, batch=config.batch, max_positions=self.max_positions,
                              opset=config.opset)
        if not config.with_positions:  # as run_export does: the positions only feed its parity check
            proto = keep_outputs(proto, [LOGITS])
        ExportMetadata(form="dynamic" if seq_len is None else "static", budget=float(budget), seq_len=seq_len,
                       max_positions=max(self.checkpoint.max_length, seq_len or 0),
                       vocabulary=self.vocab.as_dict()).write_to(proto)
        path = save_model(proto, self.work / f"b{budget:g}.onnx")
        if self.optimizer is not None:
            target = config.target or ("ort-cpu" if seq_len is None else "tensorrt")
            path = self.optimizer(path, path.with_suffix(".opt.onnx"), target=target,
                                  tolerance=config.tolerance).output
        session = load(path)
        feeds = synthetic_feeds(self.batch, self.seq_len, self.vocab)
        feeds = {name: feeds[name] for name in session.input_names}
        return median_latency_ms(lambda: session.run(**feeds))


def _schedule_at(checkpoint: RetentionCheckpoint, budget: float, checkpoint_dir: Path) -> KeepSchedule:
    schedule, _ = deployment_schedule(checkpoint, budget, checkpoint_dir)  # the very schedule export uses
    return schedule


# --- the two modes and the export ------------------------------------------------------------------------


def check_auto_config(auto: AutoBudgetConfig) -> None:
    if (auto.min_accuracy is None) == (auto.max_latency_ms is None):
        raise AdaretError("--budget auto needs exactly one target: --min-accuracy F (a fraction of the full model's "
                          "accuracy) or --max-latency-ms X")
    if auto.min_accuracy is not None and not 0.0 < auto.min_accuracy <= 1.0:
        raise AdaretError(f"--min-accuracy is a fraction of the full model's accuracy in (0, 1], "
                          f"got {auto.min_accuracy:g}")
    if auto.max_latency_ms is not None and not auto.max_latency_ms > 0.0:
        raise AdaretError(f"--max-latency-ms must be > 0, got {auto.max_latency_ms:g}")
    if auto.max_examples < 2:
        raise AdaretError(f"--max-examples must be at least 2, got {auto.max_examples}")


def settings_from_args(args: Any) -> AutoBudgetConfig | None:
    """``AutoBudgetConfig`` from parsed export arguments for ``--budget auto`` (None for a numeric budget, where
    the search's flags are an error rather than silently ignored)."""
    given = {"--min-accuracy": args.min_accuracy, "--max-latency-ms": args.max_latency_ms, "--data": args.data,
             "--text-column": args.text_column, "--label-column": args.label_column}
    if args.budget != "auto":
        flags = [flag for flag, value in given.items() if value is not None]
        if flags:
            raise AdaretError(f"{', '.join(flags)} only {'apply' if len(flags) > 1 else 'applies'} to --budget auto")
        return None
    auto = AutoBudgetConfig(min_accuracy=args.min_accuracy, max_latency_ms=args.max_latency_ms, data=args.data,
                            text_column=args.text_column, label_column=args.label_column,
                            max_examples=args.max_examples)
    check_auto_config(auto)
    return auto


def run_auto_export(config: ExportConfig, auto: AutoBudgetConfig, progress: Progress | None = None,
                    optimizer: GraphOptimizer | None = None) -> ExportResult:
    """Search the budget (module docstring), then ``run_export`` at it with the decision in metadata and report.

    ``optimizer`` runs the graph passes, both on the latency candidates and on the final export."""
    check_auto_config(auto)
    started = time.perf_counter()
    say = progress or (lambda _line: None)
    attention = _attention(config, auto)
    checkpoint = RetentionCheckpoint.from_pretrained(config.checkpoint_dir, attn_implementation=attention)
    max_positions = checkpoint.model.encoder.max_positions
    validate_config(replace(config, budget=1.0), max_positions)  # bad lengths or opset fail now, not after the search
    config = with_default_seq_lens(config, checkpoint.max_length)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a clamped fraction: run_export records it as a note
        floor = checkpoint.info.keep_schedule.min_budget
    if auto.mode == "accuracy":
        decision = _accuracy_decision(checkpoint, config, auto, floor, say)
    else:
        # --batch is the batch the latency is measured at. The graph keeps a dynamic batch: a fixed one would refuse
        # the runtime's last, smaller batch of texts.
        batch, config = config.batch or 1, replace(config, batch=None)
        decision = _latency_decision(checkpoint, config, auto, floor, say, batch, optimizer)
    decision["search_seconds"] = round(time.perf_counter() - started, 1)
    del checkpoint  # run_export loads its own copy
    return run_export(replace(config, budget=decision["chosen_budget"], budget_search=decision), optimizer)


def _attention(config: ExportConfig, auto: AutoBudgetConfig) -> str:
    """sdpa where only PyTorch evaluates: the same attention as the exported (eager-traced) graph to ~1e-6, and
    faster on CPU. Exporting, and scorers that read attention weights, need eager."""
    learned = config.scorer == "learned"
    return "sdpa" if auto.mode == "accuracy" and learned else "eager"


def _accuracy_decision(checkpoint: RetentionCheckpoint, config: ExportConfig, auto: AutoBudgetConfig,
                       floor: float, say: Progress) -> dict:
    m = float(auto.min_accuracy or 0.0)
    validation, held_out, data = validation_halves(checkpoint, auto)
    evaluator = HardEvaluator(checkpoint, config, validation, auto.batch_size)
    reference = evaluator.correct(full_schedule(checkpoint))
    if not reference.any():
        raise AdaretError(f"the full model gets none of the {len(evaluator)} validation examples of {data['source']} "
                          "right, so a fraction of its accuracy means nothing")
    say(f"budget search: smallest budget keeping {m:g} of the full model's accuracy (paired one-sided 95% bound) "
        f"on {len(evaluator)} validation examples of {data['source']}; full accuracy {reference.mean():.4f}")

    def measure(budget: float) -> Point:
        correct = reference if budget >= 1.0 else evaluator.correct(_schedule_at(checkpoint, budget,
                                                                                 config.checkpoint_dir))
        point = accuracy_point(budget, correct, reference, m)
        say(f"  budget {budget:<5g} accuracy {point.metrics['accuracy']:.4f}  ratio {point.metrics['ratio']:.4f}  "
            f"bound {point.metrics['lower_bound']:+.4f}  {'pass' if point.passed else 'fail'}")
        return point

    search, record = _search_grid(floor, ACCURACY_STEP, search_smallest, measure)
    if search.chosen is None:
        top = search.points[-1]
        raise AdaretError(f"no budget keeps {m:g} of the full model's accuracy with 95% confidence on "
                          f"{len(evaluator)} validation examples of {data['source']}: budget 1.0 reaches only a "
                          f"lower bound of {top.metrics['lower_bound']:.4f} < 0 (accuracy "
                          f"{top.metrics['accuracy']:.4f}); use more data or a lower --min-accuracy")
    check = _held_out_check(checkpoint, config, auto, held_out, search.chosen)
    notes = list(search.notes)
    if not check["holds"]:
        notes.append(f"on the held-out half ({check['examples']} examples) budget {search.chosen:g} keeps "
                     f"{_ratio(check['ratio'])} of the full model's accuracy, below the {m:g} asked for")
    return {"mode": "accuracy", "target": {"min_accuracy": m},
            "test": "paired, one-sided 95%: d_i = correct_b,i - m * correct_1.0,i; pass iff "
                    f"mean(d) - {Z_95} * sd(d) / sqrt(N) >= 0",
            "reference": "the same checkpoint and head at budget 1.0 (no token dropped)",
            "evaluated_in": f"PyTorch hard top-M, {_attention(config, auto)} attention "
                            "(what the graph computes; parity-checked at export), texts padded as the runtime pads "
                            "them",
            "data": data, "full_accuracy": round(float(reference.mean()), 6), **record, "held_out": check,
            "notes": notes}


def _search_grid(floor: float, step: float, find: Callable[[Sequence[float], Callable[[float], Point]], Search],
                 measure: Callable[[float], Point]) -> tuple[Search, dict]:
    """``find`` over the grid above ``floor``, and what a decision records of that grid and its points."""
    grid = budget_grid(floor, step)
    search = find(grid, measure)
    return search, {"grid": {"step": step, "low": grid[0], "high": grid[-1], "size": len(grid)},
                    "points": [p.as_dict() for p in search.points], "chosen_budget": search.chosen}


def _held_out_check(checkpoint: RetentionCheckpoint, config: ExportConfig, auto: AutoBudgetConfig,
                    held_out: Examples, chosen: float) -> dict:
    """The chosen budget's ratio on the half the search never saw."""
    m = float(auto.min_accuracy or 0.0)
    evaluator = HardEvaluator(checkpoint, config, held_out, auto.batch_size)
    reference = evaluator.correct(full_schedule(checkpoint))
    correct = reference if chosen >= 1.0 else evaluator.correct(_schedule_at(checkpoint, chosen,
                                                                             config.checkpoint_dir))
    point = accuracy_point(chosen, correct, reference, m)
    ratio = point.metrics["ratio"]
    return {"examples": len(evaluator), "full_accuracy": round(float(reference.mean()), 6), **point.metrics,
            "bound_passed": point.passed, "holds": ratio is not None and ratio >= m}


def _latency_decision(checkpoint: RetentionCheckpoint, config: ExportConfig, auto: AutoBudgetConfig,
                      floor: float, say: Progress, batch: int, optimizer: GraphOptimizer | None) -> dict:
    limit = float(auto.max_latency_ms or 0.0)
    seq_len = max(config.seq_lens or ())
    accuracy = _optional_accuracy(checkpoint, config, auto)
    say(f"budget search: largest budget whose graph runs batch {batch} x length {seq_len} in <= {limit:g} ms "
        "(ONNX Runtime, median of timed runs)")
    with tempfile.TemporaryDirectory(prefix="adaret-auto-budget-") as work:
        probe = LatencyProbe(checkpoint, config, batch, seq_len, Path(work), optimizer)

        def measure(budget: float) -> Point:
            latency = probe(budget)
            metrics = {"latency_ms": round(latency, 2), **(accuracy(budget) if accuracy else {})}
            say(f"  budget {budget:<5g} latency {latency:8.1f} ms  {'pass' if latency <= limit else 'fail'}")
            return Point(budget, latency <= limit, metrics)

        search, record = _search_grid(floor, LATENCY_STEP, search_largest, measure)
    if search.chosen is None:
        smallest = search.points[-1]
        raise AdaretError(f"no budget meets --max-latency-ms {limit:g} at batch {batch}, length {seq_len}: even the "
                          f"smallest reachable budget, {smallest.budget:g}, measured "
                          f"{smallest.metrics['latency_ms']:.1f} ms")
    return {"mode": "latency", "target": {"max_latency_ms": limit, "batch": batch, "seq_len": seq_len},
            "measured_on": f"ONNX Runtime, the runtime's session options; synthetic full-length input; median of "
                           f"{LATENCY_RUNS} runs after {LATENCY_WARMUP} warm-up runs; the graph as exported"
                           f"{' after graph passes' if optimizer else ''}, with a dynamic batch",
            **record, "notes": search.notes}


def _optional_accuracy(checkpoint: RetentionCheckpoint, config: ExportConfig,
                       auto: AutoBudgetConfig) -> Callable[[float], dict] | None:
    """With --data in latency mode, each point also records its accuracy on the validation half."""
    if auto.data is None:
        return None
    validation, _, _ = validation_halves(checkpoint, auto)
    evaluator = HardEvaluator(checkpoint, config, validation, auto.batch_size)
    reference = evaluator.correct(full_schedule(checkpoint))
    full = float(reference.mean())

    def accuracy(budget: float) -> dict:
        schedule = full_schedule(checkpoint) if budget >= 1.0 else _schedule_at(checkpoint, budget,
                                                                                 config.checkpoint_dir)
        value = float(evaluator.correct(schedule).mean())
        return {"accuracy": round(value, 6), "ratio": round(value / full, 6) if full > 0 else None}

    return accuracy


def summary_lines(decision: dict) -> list[str]:
    """What the CLI prints about the search, after the points it printed while measuring."""
    lines = [f"budget search ({decision['mode']}): chosen budget {decision['chosen_budget']:g} after "
             f"{len(decision['points'])} measured point(s) in {decision['search_seconds']:.0f} s"]
    check = decision.get("held_out")
    if check:
        lines.append(f"held-out half ({check['examples']} examples): accuracy {check['accuracy']:.4f}, ratio "
                     f"{_ratio(check['ratio'])} of the full model's {check['full_accuracy']:.4f} "
                     f"({'holds' if check['holds'] else 'does NOT hold'})")
    return lines


def _ratio(value: float | None) -> str:
    return "undefined (the full model gets none right)" if value is None else f"{value:.4f}"
