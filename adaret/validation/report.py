"""``adaret validate``: PyTorch full, PyTorch hard top-M and the deployed graphs on the same eval inputs.

For each backend and budget: accuracy, agreement with the full model, max |logit difference|, batch
latency p50/p95, throughput and peak memory. Writes report.json, report.md and three PNG plots, and fails
(non-zero exit) when a deployed graph disagrees with its PyTorch reference beyond the parity tolerance or
a retained model falls below the accuracy floor.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from adaret.core.errors import AdaretError
from adaret.core.io_spec import CLASSIFICATION
from adaret.export.parity import model_vocabulary
from adaret.export.pipeline import ExportConfig, run_export
from adaret.graph_passes.pipeline import optimize
from adaret.modeling import KeepSchedule
from adaret.runtime import Session, TruncationWarning, load
from adaret.runtime.explain import Explainer, write_html
from adaret.runtime.memory import synthetic_feeds
from adaret.runtime.text import Encoded
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.validation import plots
from adaret.validation.defaults import DEFAULT_BUDGETS, DEFAULT_TRT_TOLERANCE, ReportSettings
from adaret.validation.evaluate import (
    RunResult,
    encode_texts,
    load_eval_set,
    make_batches,
    memory_mib,
    ort_memory,
    quality,
    run_batches,
)
from adaret.validation.markdown import check_lines, machine_line, report_opening, write_report
from adaret.validation.reference import TorchRunner, cuda_peak_bytes, load_checkpoint, resolve_checkpoint, schedule_at


@dataclass(kw_only=True)
class ValidationConfig(ReportSettings):
    trt_tolerance: float = DEFAULT_TRT_TOLERANCE
    text_column: str = "text"
    label_column: str = "label"


@dataclass
class Deployed:
    """One deployed graph or plan and the reference schedule it must match."""

    backend: str
    budget: float
    path: Path
    session: Session
    schedule: KeepSchedule | None


@dataclass
class Context:
    config: ValidationConfig
    checkpoint: RetentionCheckpoint
    labels: np.ndarray
    encoded: Encoded
    pad_id: int
    max_length: int
    cache: dict = field(default_factory=dict)


def run_validation(config: ValidationConfig) -> dict:
    """Run every comparison, write the report files, and return the report (``report["passed"]``)."""
    _check_config(config)
    return config.run_in_out(partial(_validate, config))


def _validate(config: ValidationConfig, out: Path) -> dict:
    checkpoint = load_checkpoint(config.checkpoint)
    eval_set = load_eval_set(checkpoint, config.data, config.max_examples, config.text_column, config.label_column)
    max_length = checkpoint.max_length
    with warnings.catch_warnings():  # long articles are expected: counted in the report instead
        warnings.simplefilter("ignore", TruncationWarning)
        encoded, pad_id = encode_texts(checkpoint.path, eval_set.texts, max_length)
    context = Context(config, checkpoint, eval_set.labels, encoded, pad_id, max_length)
    deployed = _deployed(config, checkpoint, out, max_length)
    full_row, rows = _compare(context, deployed)
    report = _report(context, eval_set.name, full_row, rows, deployed)
    report["kept_tokens"] = _explain_examples(deployed[0].path, eval_set.texts, out)
    _write(report, out)
    return report


def _check_config(config: ValidationConfig) -> None:
    if config.onnx and config.budgets:
        raise AdaretError("give --budgets (to export a graph at each) or --onnx (graphs already exported), not both")
    config.check_numbers()


# --- the graphs under test ----------------------------------------------------------------------------

def _deployed(config: ValidationConfig, checkpoint: RetentionCheckpoint, out: Path, max_length: int) -> list[Deployed]:
    paths = [Path(p) for p in config.onnx] or _export_all(config, out, max_length)
    items = [_open(path, "onnxruntime", checkpoint, config) for path in paths]
    items += [_open(Path(plan), "tensorrt", checkpoint, config) for plan in config.plans]
    return items


def _export_all(config: ValidationConfig, out: Path, max_length: int) -> list[Path]:
    """One dynamic graph per budget, as ``adaret export`` makes it (its own parity gate included)."""
    paths = []
    for budget in config.budgets or DEFAULT_BUDGETS:
        # The command's own exports: a re-run into the same --out replaces them.
        result = run_export(ExportConfig(budget=budget, checkpoint=config.checkpoint,
                                         out=str(out / "exports" / f"b{budget:g}"), parity_batches=(2,),
                                         parity_lengths=(37, max_length), overwrite=True), optimize)
        graph = result.graphs[0]
        paths.append(graph.optimized.output if graph.optimized else graph.path)  # what a deployment loads
    return paths


def _open(path: Path, backend: str, checkpoint: RetentionCheckpoint, config: ValidationConfig) -> Deployed:
    session = load(path, threads=config.threads)
    meta = session.metadata
    recorded = meta.checkpoint_sha256
    if recorded and checkpoint.path is not None and recorded != checkpoint.sha256:
        raise AdaretError(f"{path.name} was exported from another checkpoint than {checkpoint.path} "
                          "(checkpoint sha256 differs); pass the matching --checkpoint")
    numerators = (meta.schedule or {}).get("numerators")
    # The graph's own schedule, so the reference keeps exactly the tokens the graph keeps.
    schedule = KeepSchedule(tuple(numerators)) if numerators else schedule_at(checkpoint, session.budget)
    return Deployed(backend, session.budget, path, session, schedule)


# --- running ------------------------------------------------------------------------------------------

def _compare(context: Context, deployed: list[Deployed]) -> tuple[dict, list[dict]]:
    config = context.config
    rows: list[dict] = []
    full_row: dict | None = None
    for item in deployed:
        batches = make_batches(context.encoded, context.pad_id, config.batch_size, context.max_length,
                               item.session.widths)
        names = item.session.input_names
        full = _reference(context, None, batches, names)
        if full_row is None:
            full_row = {"backend": "pytorch-full", "budget": 1.0,
                        **quality(full, context.labels, full.logits), **_torch_memory(context, None)}
        # At budget 1.0 too, (b) is the hard path the graph was traced from: full mode's key bias for padding
        # (log(m + eps)) differs from the hard path's, which moves logits on padded batches.
        hard = _reference(context, item.schedule, batches, names)
        if not any(r["backend"] == "pytorch-hard" and r["budget"] == item.budget for r in rows):
            rows.append({"backend": "pytorch-hard", "budget": item.budget,
                         **quality(hard, context.labels, full.logits), **_torch_memory(context, item.schedule)})
        result = run_batches(lambda feeds, s=item.session: s.run(**feeds), batches, names)
        rows.append({"backend": item.backend, "budget": item.budget, "model": str(item.path),
                     "providers": item.session.providers,
                     **quality(result, context.labels, full.logits, hard.logits), **_deployed_memory(context, item)})
    assert full_row is not None
    return full_row, rows


def _reference(context: Context, schedule: KeepSchedule | None, batches: list, input_names: list[str]) -> RunResult:
    """PyTorch on exactly these batches, full (``schedule=None``) or hard top-M; computed once per plan."""
    plan = tuple((tuple(b.indices), b.width) for b, _ in batches)
    key = (schedule.numerators if schedule else None, plan)
    if key not in context.cache:
        runner = TorchRunner(context.checkpoint.model, schedule, context.config.device)
        context.cache[key] = run_batches(runner.infer, batches, input_names)
    return context.cache[key]


def _torch_memory(context: Context, schedule: KeepSchedule | None) -> dict:
    config = context.config
    if not config.memory:
        return {}
    if config.device == "cuda":
        runner = TorchRunner(context.checkpoint.model, schedule, "cuda")
        feeds = synthetic_feeds(config.batch_size, context.max_length,
                                model_vocabulary(context.checkpoint.model, context.checkpoint.tokenizer))
        runner.infer(feeds)  # warm-up: kernels and the caching allocator's first blocks are not inference memory
        return {"peak_memory_mib": round(cuda_peak_bytes(lambda: runner.infer(feeds)) / 2**20, 1),
                "memory_method": "torch.cuda.max_memory_allocated"}
    kwargs = {"checkpoint": str(resolve_checkpoint(config.checkpoint)),
              "numerators": list(schedule.numerators) if schedule else None, "batch": config.batch_size,
              "seq_len": context.max_length, "threads": config.threads, "attn_implementation": "eager"}
    measured = memory_mib("adaret.validation.reference:torch_workload", kwargs)
    return {"peak_memory_mib": measured["peak_mib"], "memory_method": "peak RSS delta, " + measured["method"]}


def _deployed_memory(context: Context, item: Deployed) -> dict:
    config = context.config
    if not config.memory:
        return {}
    if item.backend == "tensorrt":
        # A plan's GPU memory is its activation memory per profile (from the sidecar) plus I/O, not a host RSS.
        return {"peak_memory_mib": None, "device_memory_bytes": item.session.device_memory_bytes,
                "memory_method": "TensorRT sidecar: get_device_memory_size_for_profile_v2 per profile"}
    return ort_memory(str(item.path), config.batch_size, context.max_length, config.threads)


# --- the report -------------------------------------------------------------------------------------

EXPLAIN_EXAMPLES = 3


def _explain_examples(graph: Path, texts: list[str], out: Path) -> dict:
    """The tokens each layer of the first graph kept on a few evenly spaced eval texts (``kept_tokens.html``)."""
    # An optimised graph has lost the order-restoring TopKs that explain reads; export writes the plain one beside it.
    plain = graph.with_name(graph.name.replace(".opt.onnx", ".onnx"))
    source = plain if plain.is_file() else graph
    picked = sorted({i * len(texts) // EXPLAIN_EXAMPLES for i in range(min(EXPLAIN_EXAMPLES, len(texts)))})
    try:
        explainer = Explainer(source)
        explanations = [explainer.explain(texts[i]) for i in picked]
    except AdaretError as exc:  # a view for the reader, not a check: the report stands without it
        return {"skipped": str(exc)}
    write_html(explanations, out / "kept_tokens.html")
    return {"model": str(source), "html": "kept_tokens.html",
            "examples": [{"eval_index": i, "tokens": len(e.tokens), "kept_per_layer": [len(k) for k in e.layers],
                          "truncated": e.truncated} for i, e in zip(picked, explanations, strict=True)]}


def _checks(config: ValidationConfig, full_row: dict, rows: list[dict]) -> list[dict]:
    checks = []
    for row in rows:
        name = f"{row['backend']}@{row['budget']:g}"
        if "max_abs_logit_diff_vs_reference" in row:
            tolerance = config.trt_tolerance if row["backend"] == "tensorrt" else config.parity_tolerance
            diff = row["max_abs_logit_diff_vs_reference"]
            checks.append({"check": "parity", "target": name, "passed": diff <= tolerance,
                           "detail": f"max |logit diff| vs pytorch-hard {diff:.2e} (tolerance {tolerance:.0e})"})
        if row["budget"] < 1.0:
            checks.append(config.floor_check(name, "accuracy", row["accuracy"], full_row["accuracy"], digits=4))
    return checks


def _report(context: Context, data_name: str, full_row: dict, rows: list[dict], deployed: list[Deployed]) -> dict:
    config = context.config
    checks = _checks(config, full_row, rows)
    layers = context.checkpoint.model.num_layers
    keep_counts = {f"{item.budget:g}": (item.schedule.keep_counts(context.max_length) if item.schedule
                                        else [context.max_length] * layers) for item in deployed}
    return {
        **config.report_header(task=CLASSIFICATION.task, checkpoint=resolve_checkpoint(config.checkpoint),
                               checkpoint_sha256=context.checkpoint.sha256, data=data_name),
        "eval_examples": len(context.labels),
        "max_length": context.max_length,
        "truncated_examples": sum(context.encoded.truncated),
        "thresholds": {"parity_tolerance": config.parity_tolerance, "trt_tolerance": config.trt_tolerance,
                       "accuracy_floor": config.accuracy_floor},
        "memory_workload": {"batch": config.batch_size, "seq_len": context.max_length,
                            "inputs": "synthetic, every row full length (no padding)"},
        "keep_counts_at_max_length": keep_counts,
        "full": full_row,
        "rows": rows,
        "checks": checks,
        "passed": all(c["passed"] for c in checks),
    }


def _write(report: dict, out: Path) -> None:
    budgets_counts = {float(b): counts for b, counts in report["keep_counts_at_max_length"].items()}
    plots.accuracy_vs_budget(report["rows"], report["full"]["accuracy"], report["thresholds"]["accuracy_floor"],
                             out / "accuracy_vs_budget.png")
    plots.latency_vs_budget(report["rows"], report["full"], report["batch_size"], out / "latency_vs_budget.png")
    plots.kept_tokens_per_layer(budgets_counts, report["max_length"], out / "kept_tokens_per_layer.png")
    write_report(report, out / "report.json", out / "report.md", markdown(report))


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 10 ** -digits else f"{value:.{digits}g}"
    return str(value)


def _kept_tokens_markdown(kept: dict | None) -> list[str]:
    if not kept:
        return []
    if "skipped" in kept:
        return ["", "## Kept tokens", "", f"Not shown: {kept['skipped']}"]
    lines = ["", "## Kept tokens", "", f"Tokens each layer of `{kept['model']}` processed, on eval examples "
             f"(the tokens themselves: [{kept['html']}]({kept['html']})):", ""]
    return lines + [f"- example {e['eval_index']}: " + " -> ".join(map(str, e["kept_per_layer"]))
                    + (" (truncated)" if e["truncated"] else "") for e in kept["examples"]]


def markdown(report: dict) -> str:
    columns = ("backend", "budget", "accuracy", "agreement_with_full", "max_abs_logit_diff_vs_full",
               "max_abs_logit_diff_vs_reference", "latency_p50_ms", "latency_p95_ms", "throughput_per_s",
               "peak_memory_mib", "peak_memory_mib_arena")
    lines = report_opening(report, "adaret validation report",
                           f", data {report['data']} ({report['eval_examples']} examples), batch "
                           f"{report['batch_size']}, max length {report['max_length']}, device {report['device']}, "
                           f"{report['threads']} threads.")
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in [report["full"], *report["rows"]]:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    lines += ["", "Latency is per eval batch (p50/p95 over batches), throughput in examples/s over the eval set. "
              "Peak memory is MiB above the loaded model, for one batch of "
              f"{report['memory_workload']['batch']} x {report['memory_workload']['seq_len']} full-length rows, "
              "each configuration in a fresh process; ONNX Runtime with the runtime's default session options "
              "(CPU arena off) and, in `peak_memory_mib_arena`, with ONNX Runtime's default arena. "
              "`max_abs_logit_diff_vs_reference` compares a deployed graph with PyTorch hard top-M at its budget.",
              "", "## Checks", ""]
    lines += check_lines(report["checks"])
    lines += _kept_tokens_markdown(report.get("kept_tokens"))
    lines += ["", "## Plots", "", "![accuracy](accuracy_vs_budget.png)", "", "![latency](latency_vs_budget.png)", "",
              "![kept tokens per layer](kept_tokens_per_layer.png)", "",
              machine_line(report), ""]
    return "\n".join(lines)
