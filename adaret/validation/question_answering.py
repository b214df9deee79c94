"""``adaret validate --task question-answering``: SQuAD EM and F1 of PyTorch full, PyTorch hard top-M and the
deployed graph, on the same fixed random sample of questions, and the graph's speed and memory against the full
model through the same graph passes.

Rows, each scored with the official SQuAD v1.1 normalisation (``adaret.core.squad``):
- pytorch-full: the checkpoint in ``mode="full"``;
- pytorch-hard@b: the checkpoint in hard top-M at the graph's own schedule and scorer (its metadata);
- onnxruntime@b: the export through ``adaret.runtime`` (``Session.answer_batch``), the path a deployment takes.

Every PyTorch row sees exactly the windows the runtime cuts (the export's window settings and tokenizer) padded to
the runtime's buckets: K_l follows the padded width, so any other padding would keep other tokens. The deployed
graph's own logits on those batches (``Session.run``) give the max |logit difference| against pytorch-hard, and
must decode to the answers ``answer_batch`` returned.

Speed and memory: ONNX Runtime retained against the full model exported at budget 1.0 through the same passes, on
synthetic full-length windows (the window length the model was trained with, 384 for SQuAD) at batch 1 and 8,
timed in interleaved rounds; peak memory as ``adaret validate`` measures it for classification (one fresh process
per configuration, runtime defaults and ONNX Runtime's arena).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from adaret.core.dummy_inputs import dummy_inputs
from adaret.core.errors import AdaretError
from adaret.core.io_spec import END_LOGITS, QUESTION_ANSWERING, START_LOGITS
from adaret.core.padding import PlannedBatch, plan_batches
from adaret.core.qa_windows import QaWindows, Span, best_spans, make_windows
from adaret.core.squad import SquadExample, read_squad, squad_dev_path, squad_metrics
from adaret.core.timing import interleaved_seconds
from adaret.export.config import GRAPH_PASS_TARGETS
from adaret.export.pipeline import ExportConfig, run_export, token_scorer
from adaret.graph_passes.pipeline import optimize
from adaret.modeling import KeepSchedule
from adaret.runtime import Session, load
from adaret.training.checkpoint import CONFIG_NAME, WEIGHTS_NAME, RetentionCheckpoint
from adaret.training.question_answering import load_qa_splits, sample
from adaret.validation.defaults import ReportSettings, concluded, resolve_target
from adaret.validation.evaluate import latency_summary, ort_memory
from adaret.validation.markdown import report_closing, report_opening, table, write_report
from adaret.validation.reference import device_for, load_checkpoint, schedule_at

DEFAULT_QUESTIONS = 2000
SQUAD_DEV = "squad-dev"
# Near-ties aside, the graph and PyTorch hard keep the same tokens and pick the same span; below this the graph
# disagrees with its reference systematically.
AGREEMENT_FLOOR = 0.95
TIMING_BATCHES = (1, 8)
# About 2 s a round for a MiniLM-L6 pair at 384 tokens. With 5 rounds, two recorded runs put batch 1 at 2.01x and
# 1.71x (docs/question_answering.md); more rounds narrow the median.
TIMING_ROUNDS = 15
DISAGREEMENTS_SHOWN = 10


@dataclass(kw_only=True)
class QaValidationConfig(ReportSettings):
    """For question answering, ``data`` is squad-dev or a SQuAD-format file (default: held out from the
    checkpoint's data), ``budgets`` the exports made from a checkpoint target (default: its training budget) and
    ``max_examples`` DEFAULT_QUESTIONS unless set; ``onnx`` and ``plans`` (classification's) are refused."""

    target: str | None = None  # an export (directory or .onnx) or a checkpoint directory
    seed: int = 0


@dataclass
class Graph:
    """One deployed export and the PyTorch reference it must match."""

    budget: float
    path: Path
    session: Session
    schedule: KeepSchedule
    scorer: str


@dataclass
class Decoded:
    """One backend's answers on the sample, and the window logits they came from."""

    spans: list[Span | None]
    seconds: float
    start: list[np.ndarray]
    end: list[np.ndarray]


def run_qa_validation(config: QaValidationConfig) -> dict:
    """Every comparison, report.json and report.md in ``config.out``; returns the report (``report["passed"]``)."""
    checkpoint_dir, export = _resolve_target(config)
    return config.run_in_out(partial(_validate, config, checkpoint_dir, export))


def _validate(config: QaValidationConfig, checkpoint_dir: Path, export: Path | None, out: Path) -> dict:
    checkpoint = load_checkpoint(checkpoint_dir)
    _check_task(checkpoint, checkpoint_dir)
    data_name, examples = questions(checkpoint, config.data, config.max_examples, config.seed)
    graphs = _graphs(config, checkpoint, checkpoint_dir, export, out)
    full_graph = _full_graph(config, checkpoint, checkpoint_dir, graphs, out)
    rows, disagreements, windows = _accuracy_rows(config, checkpoint, graphs, examples)
    report = {
        **config.report_header(task=QUESTION_ANSWERING.task, checkpoint=checkpoint_dir,
                               checkpoint_sha256=checkpoint.sha256, data=data_name),
        "questions": len(examples), "windows": windows, "seed": config.seed,
        "window_settings": graphs[0].session.metadata.question_answering,
        "thresholds": {"parity_tolerance": config.parity_tolerance, "accuracy_floor": config.accuracy_floor,
                       "agreement_floor": AGREEMENT_FLOOR},
        "rows": rows, "disagreements": disagreements,
        "speed": speed_rows(config, [full_graph, *[g for g in graphs if g.budget < 1.0]]),
    }
    _write(concluded(report, _checks(config, rows)), out)
    return report


# --- inputs ----------------------------------------------------------------------------------------------------

def _resolve_target(config: QaValidationConfig) -> tuple[Path, Path | None]:
    """(checkpoint directory, export or None when the export is to be made here); every refusal is cheap."""
    _check_numbers(config)
    return resolve_target(config, config.target, task="question-answering", is_checkpoint=is_checkpoint)


def _check_numbers(config: QaValidationConfig) -> None:
    config.check_numbers()
    if config.max_examples is not None and config.max_examples < 1:
        raise AdaretError(f"--max-examples must be >= 1, got {config.max_examples}")
    device_for(config.device)  # no CUDA device: said now, not after the exports


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def _check_task(checkpoint: RetentionCheckpoint, path: Path) -> None:
    task = checkpoint.model.config.task
    if task != QUESTION_ANSWERING.task:
        raise AdaretError(f"checkpoint {path} was trained for {task}; --task question-answering needs a "
                          "question-answering checkpoint")


def questions(checkpoint: RetentionCheckpoint, data: str | None, max_examples: int | None,
              seed: int) -> tuple[str, list[SquadExample]]:
    """(name, a fixed random sample of questions in file order): ``squad-dev``, every question of a SQuAD-format
    file, or by default the held-out questions of the data the checkpoint was trained on."""
    name, examples = _question_source(checkpoint, data)
    return name, sample(examples, max_examples or DEFAULT_QUESTIONS, seed)


def _question_source(checkpoint: RetentionCheckpoint, data: str | None) -> tuple[str, list[SquadExample]]:
    if data in (SQUAD_DEV, "squad"):
        return "squad-v1.1-dev", read_squad(squad_dev_path())
    if data is not None:
        if data.startswith("bbc") or data in ("rotten-tomatoes", "political-speeches"):
            raise AdaretError(f"--data {data} is a classification set; question answering reads squad-dev or a "
                              "SQuAD-format JSON file")
        return Path(data).name, read_squad(data)
    training = checkpoint.info.training
    trained_on = training.get("data") or "squad"
    if trained_on == "squad":
        return "squad-v1.1-dev", read_squad(squad_dev_path())
    _, held_out, _ = load_qa_splits(trained_on, int(training.get("seed", 0)))
    return f"{Path(trained_on).name} (held-out contexts)", held_out


# --- the graphs under test -------------------------------------------------------------------------------------

def _graphs(config: QaValidationConfig, checkpoint: RetentionCheckpoint, checkpoint_dir: Path,
            export: Path | None, out: Path) -> list[Graph]:
    if export is not None:
        return [open_graph(export, checkpoint, config.threads)]
    budgets = dict.fromkeys(config.budgets or (float(checkpoint.info.training.get("budget", 0.4)),))
    return [open_graph(export_graph(checkpoint_dir, checkpoint, b, out), checkpoint, config.threads) for b in budgets]


def _full_graph(config: QaValidationConfig, checkpoint: RetentionCheckpoint, checkpoint_dir: Path,
                graphs: list[Graph], out: Path) -> Graph:
    """The speed baseline: the full model in the same form and through the same passes as the graph under test."""
    found = next((g for g in graphs if g.budget >= 1.0), None)
    if found is not None:
        return found
    like = graphs[0].session
    path = export_graph(checkpoint_dir, checkpoint, 1.0, out, static_lengths=like.static_lengths,
                   target=like.metadata.optimized_for)
    return open_graph(path, checkpoint, config.threads)


def export_graph(checkpoint_dir: Path, checkpoint: RetentionCheckpoint, budget: float, out: Path,
            static_lengths: Sequence[int] = (), target: str | None = None) -> Path:
    """``adaret export`` (its parity gate and graph passes included); the graph a deployment loads."""
    window = int(checkpoint.info.training["question_answering"]["max_length"])
    length = min(window, checkpoint.model.encoder.max_positions)
    config = ExportConfig(task=QUESTION_ANSWERING.task, budget=budget, checkpoint=str(checkpoint_dir),
                          out=str(out / "exports" / f"b{budget:g}"), static=bool(static_lengths),
                          seq_lens=tuple(static_lengths) or None, parity_batches=(2,),
                          parity_lengths=tuple(sorted({min(37, length), length})),
                          target=target if target in GRAPH_PASS_TARGETS else None,
                          overwrite=True)  # the command's own exports: a re-run into the same --out replaces them
    graph = run_export(config, optimize).graphs[0]
    return config.out_dir if static_lengths else (graph.optimized.output if graph.optimized else graph.path)


def open_graph(path: Path, checkpoint: RetentionCheckpoint, threads: int | None = None) -> Graph:
    session = load(path, threads=threads)
    meta = session.metadata
    if meta.task != QUESTION_ANSWERING.task:
        raise AdaretError(f"{path} is a {meta.task} export; --task question-answering needs a question-answering "
                          "export")
    if meta.checkpoint_sha256 and meta.checkpoint_sha256 != checkpoint.sha256:
        raise AdaretError(f"{path} was exported from another checkpoint than {checkpoint.path} (checkpoint sha256 "
                          "differs); pass the matching --checkpoint")
    if session.encoder is None:
        raise AdaretError(f"no tokenizer.json next to {path}: the runtime needs the tokenizer export writes")
    numerators = (meta.schedule or {}).get("numerators")
    # The graph's own schedule, so the reference keeps exactly the tokens the graph keeps.
    schedule = KeepSchedule(tuple(numerators)) if numerators else schedule_at(checkpoint, meta.budget)
    schedule = schedule or KeepSchedule.from_fractions([1.0] * checkpoint.model.num_layers)
    return Graph(meta.budget, path, session, schedule, meta.scorer)


# --- windows, logits, answers ----------------------------------------------------------------------------------

def runtime_windows(session: Session, examples: Sequence[SquadExample]) -> QaWindows:
    """The windows ``Session.answer_batch`` cuts for these questions: same tokenizer, settings and length cap."""
    settings = session.metadata.question_answering or {}
    assert session.encoder is not None  # open_graph refused a graph without its tokenizer
    return make_windows(session.encoder.tokenizer, [e.question for e in examples], [e.context for e in examples],
                        max_length=min(settings["max_length"], session.max_length),
                        doc_stride=settings["doc_stride"], max_query_length=settings["max_query_length"],
                        pad_id=session.encoder.pad_id)


def runtime_batches(session: Session, windows: QaWindows, batch_size: int) -> list[PlannedBatch]:
    """The runtime's batches: each window padded to its own bucket (``adaret.runtime.qa``)."""
    return plan_batches(windows.lengths, session.widths, batch_size)


def decode(start: list[np.ndarray], end: list[np.ndarray], windows: QaWindows,
           examples: Sequence[SquadExample], max_answer_length: int) -> list[Span | None]:
    """The best span of each question over its windows, as the runtime reads it back."""
    found = best_spans(start, end, windows, [e.context for e in examples], max_answer_length=max_answer_length)
    return [spans[0] if spans else None for spans in found]


def graph_logits(session: Session, windows: QaWindows,
                 batches: Sequence[PlannedBatch]) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """Each window's start and end logits from the graph (``Session.run``), and the seconds the graph took."""
    def run(feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        out = session.run(**{name: feeds[name] for name in session.input_names if name in feeds})
        return out[START_LOGITS], out[END_LOGITS]
    return _collect(run, windows, batches)


@torch.inference_mode()
def torch_logits(checkpoint: RetentionCheckpoint, windows: QaWindows, batches: Sequence[PlannedBatch],
                 schedule: KeepSchedule | None, scorer: str = "learned",
                 device: str = "cpu") -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """PyTorch full (``schedule=None``) or hard top-M at ``schedule`` with ``scorer``, on exactly these batches."""
    target = device_for(device)
    model = checkpoint.model.to(target).eval()
    ranker = token_scorer(scorer, checkpoint)
    ranker = ranker.to(target) if ranker is not None else None
    mode = "full" if schedule is None else "hard"

    def run(feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        tensors = [torch.from_numpy(feeds[name]).to(target) for name in ("input_ids", "attention_mask",
                                                                         "token_type_ids")]
        logits = model(*tensors, mode=mode, schedule=schedule, scorer=ranker).logits.float()
        if target.type == "cuda":
            torch.cuda.synchronize()
        return logits[..., 0].cpu().numpy(), logits[..., 1].cpu().numpy()
    return _collect(run, windows, batches)


def _collect(run: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]], windows: QaWindows,
             batches: Sequence[PlannedBatch]) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    start: list[np.ndarray] = [np.empty(0)] * len(windows)
    end: list[np.ndarray] = [np.empty(0)] * len(windows)
    seconds = 0.0
    for batch in batches:
        feeds = windows.pad(batch.width, batch.indices)
        started = time.perf_counter()
        batch_start, batch_end = run(feeds)
        seconds += time.perf_counter() - started
        for row, index in enumerate(batch.indices):
            start[index], end[index] = batch_start[row], batch_end[row]
    return start, end, seconds


# --- the accuracy rows -----------------------------------------------------------------------------------------

@dataclass
class Cut:
    """One graph's view of the sample: the runtime's windows, its batches, and the decoding it applies."""

    windows: QaWindows
    batches: list[PlannedBatch]
    max_answer_length: int

    @classmethod
    def of(cls, session: Session, examples: Sequence[SquadExample], batch_size: int) -> Cut:
        windows = runtime_windows(session, examples)
        settings = session.metadata.question_answering or {}
        return cls(windows, runtime_batches(session, windows, batch_size), int(settings["max_answer_length"]))

    @property
    def plan(self) -> tuple:
        return tuple((tuple(b.indices), b.width) for b in self.batches)

    def decoded(self, examples: Sequence[SquadExample], start: list[np.ndarray], end: list[np.ndarray],
                seconds: float) -> Decoded:
        return Decoded(decode(start, end, self.windows, examples, self.max_answer_length), seconds, start, end)


def _accuracy_rows(config: QaValidationConfig, checkpoint: RetentionCheckpoint, graphs: list[Graph],
                   examples: list[SquadExample]) -> tuple[list[dict], list[dict], int]:
    rows: list[dict] = []
    disagreements: list[dict] = []
    cache: dict[tuple, Decoded] = {}
    cut = None
    for graph in graphs:
        cut = Cut.of(graph.session, examples, config.batch_size)
        full = _reference(cache, checkpoint, cut, examples, None, "learned", config.device)
        if not rows:
            rows.append(_row("pytorch-full", 1.0, "-", full, examples, full))
        hard = _reference(cache, checkpoint, cut, examples, graph.schedule, graph.scorer, config.device)
        rows.append(_row("pytorch-hard", graph.budget, graph.scorer, hard, examples, full))
        deployed, from_logits = _deployed(graph, cut, examples, config.batch_size)
        row = _row("onnxruntime", graph.budget, graph.scorer, deployed, examples, full, hard)
        rows.append(row | _logit_parity(deployed, hard, cut.windows, config.parity_tolerance)
                    | {"runtime_matches_graph_logits": _agreement(deployed, from_logits),
                       "model": str(graph.path), "providers": graph.session.providers})
        disagreements += _disagreements(graph.budget, deployed, hard, examples)
    assert cut is not None
    return rows, disagreements, len(cut.windows)


def _reference(cache: dict[tuple, Decoded], checkpoint: RetentionCheckpoint, cut: Cut,
               examples: Sequence[SquadExample], schedule: KeepSchedule | None, scorer: str, device: str) -> Decoded:
    """PyTorch on exactly these batches, full (``schedule=None``) or hard top-M; computed once per plan."""
    key = (schedule.numerators if schedule else None, scorer, cut.plan)
    if key not in cache:
        cache[key] = cut.decoded(examples, *torch_logits(checkpoint, cut.windows, cut.batches, schedule, scorer,
                                                         device))
    return cache[key]


def _deployed(graph: Graph, cut: Cut, examples: list[SquadExample], batch_size: int) -> tuple[Decoded, Decoded]:
    """The answers ``answer_batch`` gives (timed end to end) with the graph's logits on the reference's batches,
    and those logits decoded here: the two must give the same answers, or the runtime cut other windows."""
    started = time.perf_counter()
    answered = graph.session.answer_batch([e.question for e in examples], [e.context for e in examples],
                                          batch_size=batch_size)
    seconds = time.perf_counter() - started
    from_logits = cut.decoded(examples, *graph_logits(graph.session, cut.windows, cut.batches))
    spans = [found[0] if found else None for found in answered]
    return Decoded(spans, seconds, from_logits.start, from_logits.end), from_logits


def _keys(spans: Sequence[Span | None]) -> list[tuple[int, int] | None]:
    return [(s.start_char, s.end_char) if s else None for s in spans]


def _agreement(a: Decoded, b: Decoded) -> float:
    same = sum(x == y for x, y in zip(_keys(a.spans), _keys(b.spans), strict=True))
    return round(same / len(a.spans), 4)


def _row(backend: str, budget: float, scorer: str, result: Decoded, examples: list[SquadExample], full: Decoded,
         reference: Decoded | None = None) -> dict:
    predictions = {e.id: (s.text if s else "") for e, s in zip(examples, result.spans, strict=True)}
    scores = squad_metrics(predictions, examples)
    row = {"backend": backend, "budget": budget, "scorer": scorer,
           "exact_match": round(scores["exact_match"], 2), "f1": round(scores["f1"], 2),
           "agreement_with_full": _agreement(result, full),
           "seconds": round(result.seconds, 2), "questions_per_s": round(len(examples) / max(result.seconds, 1e-9), 2)}
    if reference is not None:
        row["agreement_with_reference"] = _agreement(result, reference)
    return row


def _logit_parity(deployed: Decoded, reference: Decoded, windows: QaWindows, tolerance: float) -> dict:
    """Max |start/end logit difference| over every window's real positions, and how many windows exceed
    ``tolerance`` (a near-tie that flips one kept token moves that window's logits by ~1e-2)."""
    worst = []
    for index, length in enumerate(windows.lengths):
        worst.append(max(float(np.abs(deployed.start[index][:length] - reference.start[index][:length]).max()),
                         float(np.abs(deployed.end[index][:length] - reference.end[index][:length]).max())))
    return {"max_abs_logit_diff_vs_reference": max(worst),
            "windows_over_tolerance": sum(w > tolerance for w in worst)}


def _disagreements(budget: float, deployed: Decoded, reference: Decoded,
                   examples: list[SquadExample]) -> list[dict]:
    """The first questions where the graph's answer differs from pytorch-hard's, with both scores."""
    shown = []
    for example, ours, theirs in zip(examples, deployed.spans, reference.spans, strict=True):
        if _keys([ours]) != _keys([theirs]):
            shown.append({"budget": budget, "id": example.id, "onnxruntime": ours.text if ours else "",
                          "pytorch_hard": theirs.text if theirs else "",
                          "scores": [ours.score if ours else None, theirs.score if theirs else None]})
        if len(shown) == DISAGREEMENTS_SHOWN:
            break
    return shown


# --- speed and memory ------------------------------------------------------------------------------------------

def timing_feeds(session: Session, batch: int, seq_len: int) -> dict[str, np.ndarray]:
    """Full-length windows with a question segment: K per layer follows the shape alone, so content is free."""
    feeds = dummy_inputs(batch, seq_len, session.vocabulary, np.random.default_rng(0), padded=False, segments=True)
    return {name: feeds[name] for name in session.input_names}


def speed_rows(config: QaValidationConfig, graphs: list[Graph], rounds: int = TIMING_ROUNDS) -> list[dict]:
    """ONNX Runtime latency and peak memory of each graph at batch 1 and 8; the first graph is the full model."""
    seq_len = _timing_length(graphs[0].session)
    calls = {}
    for graph in graphs:
        for batch in TIMING_BATCHES:
            feeds = timing_feeds(graph.session, batch, seq_len)
            calls[(graph.budget, batch)] = lambda s=graph.session, f=feeds: s.run(**f)
    samples = interleaved_seconds(calls, rounds)
    rows = []
    for graph in graphs:
        for batch in TIMING_BATCHES:
            rows.append(_speed_row(config, graph, batch, seq_len, samples[(graph.budget, batch)]))
    _against_full(rows)
    return rows


def _timing_length(session: Session) -> int:
    window = int((session.metadata.question_answering or {}).get("max_length", session.max_length))
    return min(window, session.max_length)


def _speed_row(config: QaValidationConfig, graph: Graph, batch: int, seq_len: int, seconds: list[float]) -> dict:
    summary = latency_summary(seconds, batch * len(seconds))
    row = {"config": "onnxruntime-full" if graph.budget >= 1.0 else "onnxruntime-retained", "budget": graph.budget,
           "batch": batch, "seq_len": seq_len, "median_ms": summary["latency_p50_ms"],
           "p95_ms": summary["latency_p95_ms"], "sequences_per_s": summary["throughput_per_s"]}
    if config.memory:
        row |= ort_memory(str(graph.path), batch, seq_len, config.threads)
    return row


def _against_full(rows: list[dict]) -> None:
    full = {r["batch"]: r for r in rows if r["config"] == "onnxruntime-full"}
    for row in rows:
        base = full[row["batch"]]
        if row is base:
            continue
        row["speedup_vs_full"] = round(base["median_ms"] / row["median_ms"], 3)
        if row.get("peak_memory_mib") and base.get("peak_memory_mib"):
            row["memory_change"] = round(row["peak_memory_mib"] / base["peak_memory_mib"] - 1, 3)


# --- checks and the report -------------------------------------------------------------------------------------

def _checks(config: QaValidationConfig, rows: list[dict]) -> list[dict]:
    def per_row(row: dict, name: str) -> list[dict]:
        same = row["runtime_matches_graph_logits"]
        agreement, diff = row["agreement_with_reference"], row["max_abs_logit_diff_vs_reference"]
        return [{"check": "runtime_windows", "target": name, "passed": same == 1.0,
                 "detail": f"answer_batch() and the graph's logits on the reference's windows give the same answer "
                           f"on {same:.2%} of questions"},
                {"check": "agreement", "target": name, "passed": agreement >= AGREEMENT_FLOOR,
                 "detail": f"same answer as pytorch-hard on {agreement:.2%} of questions (floor "
                           f"{AGREEMENT_FLOOR:.0%}); max |logit diff| {diff:.2e}, "
                           f"{row['windows_over_tolerance']} window(s) above {config.parity_tolerance:.0e}"}]

    return config.row_checks(rows, per_row, "F1", "f1")


def _write(report: dict, out: Path) -> None:
    write_report(report, out / "report.json", out / "report.md", markdown(report))


def _settings(settings: dict) -> str:
    return ", ".join(f"{name} {value}" for name, value in settings.items())


def markdown(report: dict) -> str:
    accuracy = ("backend", "budget", "scorer", "exact_match", "f1", "agreement_with_full", "agreement_with_reference",
                "max_abs_logit_diff_vs_reference", "windows_over_tolerance", "questions_per_s")
    speed = ("config", "budget", "batch", "seq_len", "median_ms", "p95_ms", "sequences_per_s", "speedup_vs_full",
             "peak_memory_mib", "peak_memory_mib_arena", "memory_change")
    lines = report_opening(report, "adaret validation report: question answering",
                           f"; {report['data']}: {report['questions']} questions (random sample, seed "
                           f"{report['seed']}), {report['windows']} windows ({_settings(report['window_settings'])}); "
                           f"batch {report['batch_size']}, device {report['device']}, {report['threads']} threads.")
    lines += ["## SQuAD exact match and F1", "", *table(report["rows"], accuracy), "",
             "EM and F1 in percent, official v1.1 normalisation. Agreement: the same answer span (characters) as "
             "pytorch-full, or as the reference (pytorch-hard at the graph's schedule and scorer). Every row sees "
             "the runtime's windows in the runtime's buckets; onnxruntime is `Session.answer_batch`, timed end to "
             "end (windowing and decoding included), the PyTorch rows the model calls only.", "",
             "## ONNX Runtime speed and memory", "", *table(report["speed"], speed), "",
             "Latency: median and p95 over interleaved rounds on synthetic full-length windows (question segment "
             "included). Peak memory: MiB of peak RSS above the loaded model, one fresh process per configuration; "
             "the runtime's default options (CPU arena off) and, in `peak_memory_mib_arena`, ONNX Runtime's arena. "
             "Speed-up and memory change are against onnxruntime-full (budget 1.0, same graph passes).", "",
             "## Checks", ""]
    lines += report_closing(report, "Questions where onnxruntime and pytorch-hard differ", lambda d: (
        f"b{d['budget']:g} {d['id']}: onnxruntime {d['onnxruntime']!r}, pytorch-hard {d['pytorch_hard']!r} "
        f"(scores {d['scores']})"))
    return "\n".join(lines)
