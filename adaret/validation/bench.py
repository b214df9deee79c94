"""``adaret bench`` (and ``benchmarks/run.py``): PyTorch, ONNX Runtime and TensorRT, full against retained.

Configurations:
- pytorch-full / pytorch-retained@b: PyTorch eager (not compiled), sdpa attention, CPU;
- onnxruntime-full: the full model as a user would deploy it without adaret. With no Optimum installed that is
  adaret's own export at budget 1.0 with adaret's ort-cpu graph passes (ONNX Runtime transformer fusions), the
  same pipeline the retained graphs go through; the results say which;
- onnxruntime-retained@b: adaret's export (and graph passes) at each budget, through ``adaret.runtime``
  with its default session options;
- tensorrt: each --plan, where tensorrt and a GPU exist.

Timing: every configuration on the same synthetic [batch, seq_len] full-length input, interleaved in rounds so
that drift on a shared machine hits all alike. Accuracy: the checkpoint's eval split (or --max-examples of
it), bucketed as the runtime does. Memory: peak RSS above the loaded model, one fresh process per configuration
and trial (median reported). Each ONNX Runtime graph is timed and measured once per --ort-modes allocator
setting (default: the runtime's arena-off default and ONNX Runtime's default arena).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import statistics
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from adaret.core.dummy_inputs import Vocabulary
from adaret.core.errors import AdaretError
from adaret.core.io_spec import CLASSIFICATION
from adaret.core.machine import describe, machine, versions
from adaret.core.outputs import output_file
from adaret.core.timing import interleaved_seconds
from adaret.export.parity import model_vocabulary
from adaret.export.pipeline import ExportConfig, run_export
from adaret.graph_passes.pipeline import optimize
from adaret.runtime import TruncationWarning, load
from adaret.runtime.memory import synthetic_feeds
from adaret.runtime.options import DEFAULT_MEMORY_MODE
from adaret.validation import evaluate as ev
from adaret.validation.markdown import write_report
from adaret.validation.reference import TorchRunner, load_checkpoint, resolve_checkpoint, schedule_at

TARGET_BUDGET, TARGET_BATCH, TARGET_SEQ = 0.4, 8, 512
TARGET_MEMORY_REDUCTION = 0.35
TARGET_ACCURACY_RATIO = 0.97


@dataclass
class BenchConfig:
    checkpoint: str | None = None
    data: str | None = None
    budgets: tuple[float, ...] = (0.3, 0.4, 0.5)
    max_examples: int | None = None
    batch_size: int = 8
    seq_len: int = 512
    threads: int | None = None
    rounds: int = 5
    memory_trials: int = 3
    ort_modes: tuple[str, ...] = ("no-arena", "arena")
    plans: list[str] = field(default_factory=list)
    out: str = "benchmarks/results"
    name: str = "bench"
    text_column: str = "text"
    label_column: str = "label"
    command: str = ""
    overwrite: bool = False  # replace an existing <name>.json and <name>.md in ``out``


@dataclass
class Candidate:
    name: str
    budget: float
    infer: Callable
    input_names: list[str]
    memory_mode: str = "-"  # ONNX Runtime CPU allocator (adaret.runtime.options.MEMORY_MODES); "-" elsewhere
    memory: tuple[str, dict] | None = None  # (workload target, kwargs) for adaret.runtime.memory
    note: str = ""

    @property
    def key(self) -> tuple[str, float, str]:
        return self.name, self.budget, self.memory_mode


def run_bench(config: BenchConfig) -> tuple[Path, Path]:
    # The results directory holds other runs' files: only this run's two are claimed, before minutes of work.
    with contextlib.ExitStack() as claims:
        for path in _result_paths(config):
            claims.enter_context(output_file(path, overwrite=config.overwrite, what="results file"))
        return _bench(config)


def _result_paths(config: BenchConfig) -> tuple[Path, Path]:
    out = Path(config.out)
    return out / f"{config.name}.json", out / f"{config.name}.md"


def _bench(config: BenchConfig) -> tuple[Path, Path]:
    if config.threads:
        torch.set_num_threads(config.threads)
    if any(b >= 1.0 for b in config.budgets):
        raise AdaretError("--budgets are the retained budgets (< 1); the full model is always included")
    checkpoint = load_checkpoint(config.checkpoint, attn_implementation="sdpa")
    max_positions = checkpoint.model.encoder.max_positions
    if config.seq_len > max_positions:
        raise AdaretError(f"--seq-len {config.seq_len} exceeds the model's {max_positions} positions")
    # Read (and check) the data before the exports, which take minutes: a missing file or column fails now.
    eval_set = ev.load_eval_set(checkpoint, config.data, config.max_examples, config.text_column, config.label_column)
    with tempfile.TemporaryDirectory(prefix="adaret-bench-") as work:
        rows = _measure(config, checkpoint, _candidates(config, checkpoint, Path(work)), eval_set)
    payload = _payload(config, checkpoint, rows)
    return _write(config, payload)


def _export(config: BenchConfig, budget: float, work: Path) -> Path:
    """adaret's export and its graph passes for ONNX Runtime CPU; the optimised graph is what deploys."""
    result = run_export(ExportConfig(budget=budget, checkpoint=config.checkpoint, out=str(work / f"b{budget:g}"),
                                     parity_batches=(2,), parity_lengths=(37, config.seq_len)), optimize)
    graph = result.graphs[0]
    return graph.optimized.output if graph.optimized else graph.path


def baseline_note() -> str:
    optimum = importlib.util.find_spec("optimum") is not None
    prefix = ("optimum is installed, but this benchmark does not drive its exporter yet" if optimum
              else "Optimum is not installed")
    return (f"{prefix}: the full-model baseline is adaret's own export at budget 1.0 with adaret's ort-cpu graph "
            "passes (ONNX Runtime transformer fusions)")


def _candidates(config: BenchConfig, checkpoint, work: Path) -> list[Candidate]:
    model, ckpt = checkpoint.model, str(resolve_checkpoint(config.checkpoint))
    shape = {"batch": config.batch_size, "seq_len": config.seq_len, "threads": config.threads}
    names = CLASSIFICATION.input_names(model.encoder.uses_token_type_ids)
    out: list[Candidate] = []
    for budget in (1.0, *config.budgets):
        schedule = schedule_at(checkpoint, budget)
        memory = ("adaret.validation.reference:torch_workload",
                  {"checkpoint": ckpt, "numerators": list(schedule.numerators) if schedule else None, **shape})
        out.append(Candidate("pytorch-full" if schedule is None else "pytorch-retained", budget,
                             TorchRunner(model, schedule).infer, names, memory=memory))
    graphs = [("onnxruntime-full", 1.0, _export(config, 1.0, work))]
    graphs += [("onnxruntime-retained", b, _export(config, b, work)) for b in config.budgets]
    for mode in config.ort_modes:  # each allocator setting is timed and measured on its own
        for name, budget, path in graphs:
            session = load(path, memory=mode, threads=config.threads)
            memory = ("adaret.runtime.memory:ort_workload", {"model": str(path), "memory": mode, **shape})
            out.append(Candidate(name, budget, lambda f, s=session: s.run(**f), session.input_names, mode, memory))
    for plan in config.plans:
        session = load(plan)
        out.append(Candidate("tensorrt", session.budget or 1.0, lambda f, s=session: s.run(**f), session.input_names,
                             note=f"GPU activation memory per profile (sidecar): "
                                  f"{session.device_memory_bytes} bytes"))
    return out


def _measure(config: BenchConfig, checkpoint, candidates: list[Candidate], eval_set: ev.EvalSet) -> list[dict]:
    timings = _interleaved(config, candidates, model_vocabulary(checkpoint.model, checkpoint.tokenizer))
    with warnings.catch_warnings():  # truncation to --seq-len is the benchmark's setting, not news
        warnings.simplefilter("ignore", TruncationWarning)
        encoded, pad_id = ev.encode_texts(checkpoint.path, eval_set.texts, config.seq_len)
    batches = ev.make_batches(encoded, pad_id, config.batch_size, config.seq_len)
    full = ev.run_batches(candidates[0].infer, batches, candidates[0].input_names)
    rows = []
    for candidate in candidates:
        result = full if candidate is candidates[0] else ev.run_batches(candidate.infer, batches, candidate.input_names)
        accuracy = ev.quality(result, eval_set.labels, full.logits)
        row = {"config": candidate.name, "budget": candidate.budget, "memory_mode": candidate.memory_mode,
               **timings[candidate.key], "accuracy": accuracy["accuracy"],
               "agreement_with_full": accuracy["agreement_with_full"], "eval_examples": len(eval_set.labels),
               "eval_throughput_per_s": accuracy["throughput_per_s"]}
        if candidate.memory:
            measured = ev.memory_mib(*candidate.memory, trials=config.memory_trials)
            row |= {"peak_memory_mib": measured["peak_mib"],
                    "peak_memory_mib_range": [measured.get("peak_mib_min"), measured.get("peak_mib_max")]}
        if candidate.note:
            row["note"] = candidate.note
        rows.append(row)
    return rows


def _interleaved(config: BenchConfig, candidates: list[Candidate],
                 vocab: Vocabulary) -> dict[tuple[str, float, str], dict]:
    feeds = synthetic_feeds(config.batch_size, config.seq_len, vocab)
    calls = {c.key: (lambda c=c: c.infer({n: feeds[n] for n in c.input_names})) for c in candidates}
    samples = interleaved_seconds(calls, config.rounds)
    out = {}
    for key, seconds in samples.items():
        summary = ev.latency_summary(seconds, config.batch_size * len(seconds))
        out[key] = {"median_ms": round(1000 * statistics.median(seconds), 2), "p95_ms": summary["latency_p95_ms"],
                    "sequences_per_s": round(config.batch_size / statistics.median(seconds), 2)}
    return out


def _ratios(rows: list[dict]) -> None:
    """Speed-up and memory change of each row against its own family's full model, same allocator setting."""
    reference = {"pytorch": "pytorch-full", "onnxruntime": "onnxruntime-full"}
    by_key = {(r["config"], r["budget"], r["memory_mode"]): r for r in rows}
    for row in rows:
        base = by_key.get((reference.get(row["config"].split("-")[0], ""), 1.0, row["memory_mode"]))
        if base is None or row is base:
            continue
        row["speedup_vs_full"] = round(base["median_ms"] / row["median_ms"], 3)
        if row.get("peak_memory_mib") and base.get("peak_memory_mib"):
            row["memory_change"] = round(row["peak_memory_mib"] / base["peak_memory_mib"] - 1, 3)


def _targets(config: BenchConfig, rows: list[dict]) -> list[dict]:
    """The issue's targets, judged only in the setting they are stated for."""
    if (config.batch_size, config.seq_len) != (TARGET_BATCH, TARGET_SEQ) or TARGET_BUDGET not in config.budgets:
        return [{"target": "all", "status": f"n/a: targets are stated for batch {TARGET_BATCH}, seq {TARGET_SEQ}, "
                                            f"budget {TARGET_BUDGET}"}]
    row = next((r for r in rows if r["config"] == "onnxruntime-retained" and r["budget"] == TARGET_BUDGET
                and r["memory_mode"] == DEFAULT_MEMORY_MODE), None)
    if row is None:
        return [{"target": "all", "status": f"n/a: no onnxruntime-retained row with the runtime's default "
                                            f"{DEFAULT_MEMORY_MODE} allocator"}]
    full = next(r for r in rows if r["config"] == "pytorch-full")
    change = row.get("memory_change")
    ratio = row["accuracy"] / full["accuracy"] if full["accuracy"] else 0.0
    return [
        {"target": f"peak memory >= {TARGET_MEMORY_REDUCTION:.0%} lower than onnxruntime-full (runtime options)",
         "value": change, "met": change is not None and -change >= TARGET_MEMORY_REDUCTION},
        {"target": f"accuracy >= {TARGET_ACCURACY_RATIO:.0%} of the full model", "value": round(ratio, 4),
         "met": ratio >= TARGET_ACCURACY_RATIO},
    ]


def _payload(config: BenchConfig, checkpoint, rows: list[dict]) -> dict:
    _ratios(rows)
    return {"command": config.command, "checkpoint": resolve_checkpoint(config.checkpoint).name,
            "checkpoint_sha256": checkpoint.sha256, "batch": config.batch_size, "seq_len": config.seq_len,
            "threads": {"torch": torch.get_num_threads(), "onnxruntime": config.threads or "default"},
            "rounds": config.rounds, "memory_trials": config.memory_trials, "baseline": baseline_note(),
            "tensorrt": "run" if config.plans else "not run: no --plan given",
            "rows": rows, "targets": _targets(config, rows), "machine": machine(), "versions": versions(),
            # glibc's malloc tunables change how much freed memory returns to the system (docs/runtime.md)
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}}


def _write(config: BenchConfig, payload: dict) -> tuple[Path, Path]:
    json_path, md_path = _result_paths(config)
    write_report(payload, json_path, md_path, markdown(payload))
    return json_path, md_path


def markdown(payload: dict) -> str:
    columns = ("config", "budget", "memory_mode", "median_ms", "p95_ms", "sequences_per_s", "speedup_vs_full",
               "peak_memory_mib", "memory_change", "accuracy", "agreement_with_full")
    m, v = payload["machine"], payload["versions"]
    lines = [f"# adaret bench: batch {payload['batch']}, seq {payload['seq_len']}", "",
             f"Command: `{payload['command']}`", "",
             f"Machine: {describe(m)}, {m['system']}; threads {payload['threads']}; malloc "
             f"environment {payload['malloc_env'] or 'default'}.", "",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), "",
             f"ONNX Runtime baseline: {payload['baseline']}.", "", f"TensorRT: {payload['tensorrt']}.", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in payload["rows"]:
        lines.append("| " + " | ".join("-" if row.get(c) is None else str(row[c]) for c in columns) + " |")
    lines += ["", "Latency: median and p95 over interleaved rounds on one synthetic full-length batch. Speed-up and "
              "memory change are against the same family's full model (pytorch-full, onnxruntime-full) with the same "
              "memory_mode. Peak memory: MiB of peak RSS above the loaded model, median of fresh processes. "
              "memory_mode is ONNX Runtime's CPU allocator setting: no-arena is the runtime's default, arena ONNX "
              "Runtime's own default. Accuracy: the eval split, bucketed as the runtime does.", "", "## Targets", ""]
    for target in payload["targets"]:
        status = target.get("status") or (f"{'met' if target['met'] else 'NOT met'} ({target['value']})")
        lines.append(f"- {target['target']}: {status}")
    return "\n".join(lines) + "\n"
