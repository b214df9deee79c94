"""``python export.py --budget B``: checkpoint -> top-M module -> ONNX -> parity -> artifacts."""

from __future__ import annotations

import collections
import copy
import json
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import onnx

from adaret import __version__
from adaret.core.constants import MIN_OPSET
from adaret.core.dummy_inputs import Vocabulary
from adaret.core.errors import AdaretError, ExportError, ParityError, root_cause
from adaret.core.fileio import STAGING_SUFFIX, atomic_file
from adaret.core.metadata import ExportMetadata
from adaret.core.onnx_files import save_model
from adaret.core.outputs import EXPORT_GRAPH, output_dir
from adaret.export.config import DEFAULT_CHECKPOINT as DEFAULT_CHECKPOINT  # re-exported: callers import it here
from adaret.export.config import DEFAULT_SEQ_LENS, PARITY_LENGTHS, ExportConfig
from adaret.export.inference import TopMInference
from adaret.export.onnx_export import export_module, keep_outputs
from adaret.export.parity import ParityReport, check_parity, model_vocabulary
from adaret.modeling import DENOMINATOR, MIN_KEEP, KeepSchedule
from adaret.modeling.scorers import TokenScorer, make_scorer
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.training.seq2seq_checkpoint import is_seq2seq_checkpoint

REPORT_NAME = "export_report.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


class PassLine(Protocol):
    def line(self) -> str: ...


class OptimizedGraph(Protocol):
    """What the graph-pass stage returns for one graph (``adaret.graph_passes.OptimizeResult``)."""

    output: Path
    target: str
    nodes_before: int
    nodes_after: int
    reports: Sequence[PassLine]


class GraphOptimizer(Protocol):
    """The graph-pass stage, handed in by the caller: the export stage imports no later stage."""

    def __call__(self, source: Path, output: Path, *, target: str, tolerance: float) -> OptimizedGraph: ...


@dataclass
class ExportedGraph:
    path: Path
    seq_len: int | None  # None: dynamic
    keep_counts: dict[int, list[int]]
    op_counts: dict[str, int]
    parity: ParityReport
    seconds: float
    optimized: OptimizedGraph | None = None

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


@dataclass
class ExportResult:
    config: ExportConfig
    schedule: KeepSchedule
    training_budget: float
    checkpoint_sha256: str
    graphs: list[ExportedGraph] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report_path: Path | None = None


def run_export(config: ExportConfig, optimizer: GraphOptimizer | None = None) -> ExportResult:
    """Export every requested form, check each against PyTorch, write the artifacts; raise on failure.

    ``optimizer`` (``adaret.graph_passes.optimize``) then runs the target's graph passes on each graph and
    writes ``model.opt.onnx`` beside it; None leaves the exported graphs as they are.

    The directory is published as one set (``adaret.core.outputs``): every file is written into staging inside it
    and renamed into place only when the whole export succeeded, the graphs an earlier export left there are
    removed, and ``manifest.json`` (each file's sha256) is written last; ``adaret.runtime.load`` checks it.
    """
    checkpoint_dir = config.checkpoint_dir
    if is_seq2seq_checkpoint(checkpoint_dir):  # its config would fail to parse here, with a less useful message
        raise AdaretError(f"checkpoint {checkpoint_dir} is a summarization checkpoint: export it with --task "
                          "summarization (adaret.export.seq2seq.run_summarization_export)")
    checkpoint = RetentionCheckpoint.from_pretrained(checkpoint_dir, attn_implementation="eager")
    if config.task is not None and config.task != checkpoint.model.config.task:
        raise AdaretError(f"--task {config.task}: checkpoint {checkpoint_dir} was trained for "
                          f"{checkpoint.model.config.task}")
    max_positions = checkpoint.model.encoder.max_positions  # usable length, not the table's rows
    validate_config(config, max_positions)
    config = with_default_seq_lens(config, checkpoint.max_length)
    schedule, notes = deployment_schedule(checkpoint, config.budget, checkpoint_dir)  # before any output exists
    notes += (config.budget_search or {}).get("notes", [])
    out_dir = config.out_dir
    result = ExportResult(config, schedule, float(checkpoint.info.training["budget"]), checkpoint.sha256, notes=notes)
    scorer = token_scorer(config.scorer, checkpoint)
    module = TopMInference(checkpoint.model, schedule, with_positions=True, scorer=scorer).eval()
    lengths = list(config.seq_lens) if config.static else [None]
    with output_dir(out_dir, overwrite=config.overwrite, what="export directory") as out:
        staged = out.staging("export")
        _copy_tokenizer(checkpoint_dir, staged)  # first: the graph passes may read the vocabulary beside a graph
        for seq_len in lengths:
            graph = _export_one(module, checkpoint, result, seq_len, max_positions, staged)
            if optimizer is not None:
                target = config.target or ("ort-cpu" if seq_len is None else "tensorrt")
                graph.optimized = optimizer(graph.path, graph.path.with_suffix(".opt.onnx"), target=target,
                                            tolerance=config.tolerance)
            result.graphs.append(graph)
        _write_report(result, staged)
        out.publish(staged, supersedes=_export_file, manifest=True)
    for graph in result.graphs:
        graph.path = out_dir / graph.path.name
        graph.optimized = _moved(graph.optimized, staged, out_dir)
    result.report_path = out_dir / REPORT_NAME
    return result


def _export_file(name: str) -> bool:
    """A file an earlier export wrote (also one without a manifest): replaced, or removed, by this one."""
    return bool(EXPORT_GRAPH.fullmatch(name)) or name in (REPORT_NAME, *TOKENIZER_FILES)


def _moved(optimized: OptimizedGraph | None, staged: Path, out_dir: Path) -> OptimizedGraph | None:
    """The graph-pass result with its paths (output, report, source) pointing where the files were published."""
    if optimized is None:
        return None
    moved = copy.copy(optimized)
    for name, value in getattr(moved, "__dict__", {}).items():
        if isinstance(value, Path) and value.parent == staged:
            setattr(moved, name, out_dir / value.name)
    return moved


def with_default_seq_lens(config: ExportConfig, max_length: int) -> ExportConfig:
    """Where the config names none: ``DEFAULT_SEQ_LENS`` below the deployed max length, then that length, so the
    largest bucket holds every text the model was trained on (384 gets 128, 256 and 384)."""
    if config.seq_lens is not None:
        return config
    return replace(config, seq_lens=(*(n for n in DEFAULT_SEQ_LENS if n < max_length), max_length))


def token_scorer(name: str, checkpoint: RetentionCheckpoint) -> TokenScorer | None:
    """The scorer ``--scorer name`` puts in the graph (None: the learned gates); a bad choice is one line."""
    try:
        return make_scorer(name, checkpoint.model)
    except ValueError as exc:
        raise AdaretError(f"--scorer {name}: {exc}") from None


def validate_config(config: ExportConfig, max_positions: int) -> None:
    if not 0.0 < config.budget <= 1.0:
        raise AdaretError(f"budget must lie in (0, 1], got {config.budget}")
    for n in (*(config.seq_lens or ()), *(config.parity_lengths or ())):
        if not 2 <= n <= max_positions:
            raise AdaretError(f"sequence length {n} is outside [2, {max_positions}] (the model's max positions)")
    if config.opset < MIN_OPSET:
        raise AdaretError(f"opset {config.opset} is too old: the dynamo exporter needs opset >= {MIN_OPSET}")
    newest = onnx.defs.onnx_opset_version()
    if config.opset > newest:
        raise AdaretError(f"opset {config.opset} is newer than the installed onnx {onnx.__version__} supports "
                          f"(at most {newest})")
    if config.batch is not None and config.batch < 1:
        raise AdaretError(f"batch must be >= 1, got {config.batch}")
    if not (math.isfinite(config.tolerance) and config.tolerance >= 0):
        raise AdaretError(f"tolerance must be a finite number >= 0, got {config.tolerance}")


def deployment_schedule(checkpoint: RetentionCheckpoint, budget: float,
                         checkpoint_dir: Path) -> tuple[KeepSchedule, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        measured = checkpoint.info.keep_schedule  # reading the fractions may warn that some were clamped
        floor = measured.min_budget
        if budget < 1.0 and budget <= floor:  # rescaled() would refuse it; say what the user can ask for instead
            hint = f"--budget {math.floor(floor * 100 + 1e-9) / 100 + 0.01:.2f}" if floor < 0.99 else "--budget 1.0"
            raise AdaretError(f"budget {budget:g} is not reachable with checkpoint {checkpoint_dir}: "
                              f"{measured.full_layers} of {len(measured.numerators)} layers are never gated and "
                              "keep every token, so the "
                              f"smallest reachable budget is just above {floor:.3f} (try {hint})")
        try:
            schedule = measured.rescaled(budget)
        except ValueError as exc:
            raise AdaretError(f"checkpoint {checkpoint_dir}: {exc}") from None
    return schedule, [str(w.message) for w in caught]


def _parity_shapes(config: ExportConfig, seq_len: int | None, max_positions: int) -> list[tuple[int, int]]:
    if seq_len is not None:
        lengths = [seq_len]
    else:
        lengths = [n for n in (config.parity_lengths or PARITY_LENGTHS) if n <= max_positions]
    batches = [config.batch] if config.batch is not None else list(config.parity_batches)
    return [(b, n) for b in batches for n in lengths]


def _export_one(module: TopMInference, checkpoint: RetentionCheckpoint, result: ExportResult,
                seq_len: int | None, max_positions: int, directory: Path) -> ExportedGraph:
    config = result.config
    started = time.perf_counter()
    name = "model.onnx" if seq_len is None else f"model_seq{seq_len}.onnx"
    final_path = directory / name
    shown = [seq_len] if seq_len is not None else list(config.seq_lens)
    keep_counts = {n: result.schedule.keep_counts(n) for n in shown}
    try:
        proto = export_module(module, seq_len=seq_len, batch=config.batch, max_positions=max_positions,
                              opset=config.opset)
    except Exception as exc:  # torch.export / torch.onnx: pages of advice around one line that matters
        form = "the dynamic graph" if seq_len is None else f"the static graph for length {seq_len}"
        raise ExportError(f"the ONNX exporter failed on checkpoint {config.checkpoint_dir} at budget "
                          f"{config.budget:g} ({form}): {root_cause(exc)}") from exc
    vocab = model_vocabulary(checkpoint.model, checkpoint.tokenizer)
    staging = Path(tempfile.mkdtemp(prefix=".parity.", suffix=STAGING_SUFFIX, dir=directory))
    try:
        shapes = _parity_shapes(config, seq_len, max_positions)
        parity = check_parity(module, save_model(proto, staging / name), shapes, vocab, tolerance=config.tolerance)
        if not config.with_positions:
            proto = keep_outputs(proto, list(module.io_spec.outputs))
            parity.cases += check_parity(module, save_model(proto, staging / name), shapes[-1:], vocab,
                                         tolerance=config.tolerance, seed=1).cases
        if not parity.passed:
            raise ParityError(f"{name}: ONNX Runtime disagrees with PyTorch (max |logit diff| "
                              f"{parity.max_abs_diff:.2e}, tolerance {config.tolerance:.0e}, kept positions "
                              f"{parity.positions_verdict}); nothing written")
        _metadata(module, checkpoint, result, seq_len, keep_counts, proto, vocab).write_to(proto)
        save_model(proto, final_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    return ExportedGraph(final_path, seq_len, keep_counts, dict(ops.most_common()), parity,
                         round(time.perf_counter() - started, 2))


def _metadata(module: TopMInference, checkpoint: RetentionCheckpoint, result: ExportResult,
              seq_len: int | None, keep_counts: dict[int, list[int]], proto: onnx.ModelProto,
              vocab: Vocabulary) -> ExportMetadata:
    schedule = result.schedule
    rule = (f"K_l = max({MIN_KEEP}, (num_l * n + {DENOMINATOR - 1}) // {DENOMINATOR}) for a gated layer with "
            f"num_l < {DENOMINATOR}, K_l = n otherwise; n = input sequence length")
    return ExportMetadata(
        version=__version__,
        budget=float(result.config.budget),
        training_budget=result.training_budget,
        schedule={"denominator": DENOMINATOR, "numerators": list(schedule.numerators),
                  "fractions": schedule.fractions, "measured": checkpoint.info.schedule["keep_fractions"]},
        form="dynamic" if seq_len is None else "static",
        seq_len=seq_len,
        # What the runtime reads at most: the trained length, or the static bucket asked for.
        max_positions=max(checkpoint.max_length, seq_len or 0),
        keep_rule=rule,
        keep_counts={str(n): counts for n, counts in keep_counts.items()},
        checkpoint_sha256=result.checkpoint_sha256,
        backbone=checkpoint.info.base_model.get("name", ""),
        scorer=result.config.scorer,
        pooling="" if checkpoint.model.config.is_question_answering else checkpoint.model.config.pooling,
        task=checkpoint.model.config.task,
        question_answering=checkpoint.info.training.get("question_answering"),
        label_names=list(checkpoint.info.label_names),
        opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), result.config.opset),
        input_names=list(module.input_names),
        output_names=[o.name for o in proto.graph.output],
        vocabulary=vocab.as_dict(),
        budget_search=result.config.budget_search or None,
    )


def _copy_tokenizer(checkpoint_dir: Path, out_dir: Path) -> None:
    """The tokenizer and the label names travel with the graph, so a deployment needs nothing else."""
    for name in TOKENIZER_FILES:
        source = checkpoint_dir / name
        if source.is_file():
            with atomic_file(out_dir / name) as tmp:
                shutil.copyfile(source, tmp)


def _optimized_entry(optimized: OptimizedGraph | None) -> dict | None:
    if optimized is None:
        return None
    return {"path": optimized.output.name, "target": optimized.target, "size_bytes": optimized.output.stat().st_size,
            "nodes": [optimized.nodes_before, optimized.nodes_after], "passes": [r.line() for r in optimized.reports]}


def _write_report(result: ExportResult, directory: Path) -> Path:
    report = {
        "adaret_version": __version__,
        "budget": result.config.budget,
        "training_budget": result.training_budget,
        "schedule_fractions": result.schedule.fractions,
        "schedule_budget": result.schedule.budget,
        "checkpoint_sha256": result.checkpoint_sha256,
        "notes": result.notes,
        "budget_search": result.config.budget_search,
        "graphs": [{"path": g.path.name, "seq_len": g.seq_len or "dynamic", "size_bytes": g.size_bytes,
                    "keep_counts": {str(k): v for k, v in g.keep_counts.items()}, "op_counts": g.op_counts,
                    "parity": g.parity.as_dict(), "seconds": g.seconds,
                    "optimized": _optimized_entry(g.optimized)} for g in result.graphs],
    }
    path = directory / REPORT_NAME
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    return path
