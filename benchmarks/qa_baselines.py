"""SQuAD v1.1: learned retention against what a user would do instead, at equal cost, through ONNX Runtime.

    python benchmarks/qa_baselines.py --checkpoint CK [--max-examples 2000] [--seed 0]
                                      [--out benchmarks/results/qa_baselines] [--overwrite]

Methods at each budget b in 0.3 and 0.4, with the full model (budget 1.0) as the reference:
- learned: the checkpoint's gates on its learned schedule rescaled to b (``adaret export --budget b``);
- significance: PoWER-BERT attention significance on the same checkpoint and schedule (``--scorer significance``;
  left out when the first layer is gated, where it has no layer to read attention from);
- random: a fixed random ranking on the same checkpoint and schedule (``--scorer random``);
- truncation: the full graph (budget 1.0) on cut windows. A window of n tokens, [CLS] question [SEP] context
  [SEP], keeps its question segment (its q leading token-type-0 tokens), the first K of its context tokens and
  its closing special token(s) (s of them), with K = max(1, ceil(b * n) - q - s): the cut window has
  ceil(b * n) tokens, the token count a b-budget spends per layer on the uncut window, or q + s + 1 where the
  question alone already fills that.

Every method is an exported graph (``adaret export``, parity-checked against PyTorch, then the ``ort-cpu`` graph
passes), run through ``adaret.runtime`` on the windows the runtime cuts (``adaret.core.qa_windows``; the cut ones
for truncation), each window padded to the runtime's bucket, and decoded by the same ``best_spans``; EM and F1
are the official v1.1 ones, on a fixed random sample of the dev questions (``--max-examples``, seed ``--seed``).
``cost`` is the token-layer slots a method's graph executes over those of the full graph on the same windows,
padded as the runtime pads them (to multiples of 32): sum_l K_l(w) / (L * w) for top-M at padded width w, w' / w
for a cut window padded to w'. ``token_cost`` counts real tokens instead: sum_l min(K_l(w), n) / (L * n) for
top-M (K_l follows the padded width, so a top-M window processes a little more than b * n), ceil(b * n) / n for
truncation.

Latency: ONNX Runtime through ``adaret.runtime`` (its default session options), learned at 0.4 against the full
graph, on synthetic full-length windows at the trained window length (384 for SQuAD) and batch 1 and 8, in
interleaved rounds with an untimed settle call first in each turn (benchmarks/common.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, describe, interleaved_medians, machine

from adaret.core.errors import AdaretError
from adaret.core.fileio import atomic_file
from adaret.core.io_spec import QUESTION_ANSWERING
from adaret.core.outputs import output_file
from adaret.core.padding import smallest_width
from adaret.core.qa_windows import NO_OFFSET, QaWindows
from adaret.core.squad import SquadExample, exact_match_score, f1_score, squad_metrics
from adaret.export import ExportConfig, run_export
from adaret.graph_passes.pipeline import optimize
from adaret.modeling import KeepSchedule
from adaret.runtime import Session, load
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.validation.question_answering import (
    SQUAD_DEV,
    Cut,
    graph_logits,
    questions,
    runtime_batches,
    runtime_windows,
    timing_feeds,
)

COMMAND = "python benchmarks/qa_baselines.py"
BUDGETS = (0.3, 0.4)
SCORERS = ("learned", "significance", "random")
METHODS = (*SCORERS, "truncation")
TIMED_BUDGET = 0.4
TIMED_BATCHES = (1, 8)
DEFAULT_OUT = RESULTS / "qa_baselines"


def truncated(windows: QaWindows, budget: float) -> QaWindows:
    """Each window cut to its question segment, its first K context tokens and its closing special tokens, so
    that it has ceil(budget * n) tokens (see the module docstring for the exact rule)."""
    ids, types, offsets = [], [], []
    for row_ids, row_types, row_offsets in zip(windows.input_ids, windows.token_type_ids, windows.offsets,
                                               strict=True):
        n = len(row_ids)
        question = next(i for i, t in enumerate(row_types) if t != 0)
        closing = n - 1 - max(i for i in range(n) if row_offsets[i, 0] != NO_OFFSET)
        keep = max(1, math.ceil(round(budget * n, 9)) - question - closing)
        rows = [*range(question + min(keep, n - question - closing)), *range(n - closing, n)]
        ids.append([row_ids[i] for i in rows])
        types.append([row_types[i] for i in rows])
        offsets.append(row_offsets[rows])
    return QaWindows(ids, types, offsets, windows.example_index, windows.example_count, windows.pad_id)


class Graphs:
    """One exported graph per (scorer, budget); at 1.0 every scorer is the full graph."""

    def __init__(self, checkpoint: Path, window: int, work: Path, threads: int | None):
        self.checkpoint, self.window, self.work, self.threads = checkpoint, window, work, threads
        self.sessions: dict[tuple[str, float], Session] = {}
        self.parity: dict[str, float] = {}
        self.export_seconds: dict[str, float] = {}

    def session(self, scorer: str, budget: float) -> Session:
        scorer = "learned" if budget >= 1.0 else scorer
        if (scorer, budget) not in self.sessions:
            started = time.perf_counter()
            result = run_export(ExportConfig(
                task=QUESTION_ANSWERING.task, budget=budget, checkpoint=str(self.checkpoint), scorer=scorer,
                out=str(self.work / f"{scorer}-b{budget:g}"), parity_batches=(2,),
                parity_lengths=tuple(sorted({min(37, self.window), self.window}))), optimize)
            graph = result.graphs[0]
            key = f"{scorer}@{budget:g}"
            self.export_seconds[key] = round(time.perf_counter() - started, 1)
            self.parity[key] = graph.parity.max_abs_diff
            path = graph.optimized.output if graph.optimized else graph.path
            self.sessions[(scorer, budget)] = load(path, threads=self.threads)
        return self.sessions[(scorer, budget)]


def per_question(spans: Sequence, examples: Sequence[SquadExample]) -> tuple[dict, np.ndarray]:
    """The official aggregate scores, and each question's F1 (for the paired intervals)."""
    texts = [s.text if s else "" for s in spans]
    truths = [[a.text for a in e.answers] for e in examples]
    scores = squad_metrics({e.id: t for e, t in zip(examples, texts, strict=True)}, examples)
    f1 = np.array([f1_score(t, gold) for t, gold in zip(texts, truths, strict=True)])
    exact = np.array([exact_match_score(t, gold) for t, gold in zip(texts, truths, strict=True)])
    assert abs(100 * f1.mean() - scores["f1"]) < 1e-6 and abs(100 * exact.mean() - scores["exact_match"]) < 1e-6
    return scores, f1


def costs(session: Session, windows: QaWindows, schedule: KeepSchedule | None,
          cut: QaWindows | None) -> tuple[float, float]:
    """(executed token-layer slots, real tokens processed per layer), each over the full graph's on the same windows,
    padded as the runtime pads them: top-M keeps K_l(w) of w padded slots, of which min(K_l, n) real tokens."""
    slots, tokens = [], []
    for index, n in enumerate(windows.lengths):
        width = smallest_width(session.widths, n)
        if cut is not None:
            slots.append(smallest_width(session.widths, cut.lengths[index]) / width)
            tokens.append(cut.lengths[index] / n)
        else:
            counts = schedule.keep_counts(width) if schedule is not None else [width]
            slots.append(sum(counts) / (len(counts) * width))
            tokens.append(sum(min(k, n) for k in counts) / (len(counts) * n))
    return round(float(np.mean(slots)), 4), round(float(np.mean(tokens)), 4)


def evaluate(graphs: Graphs, method: str, budget: float, examples: list[SquadExample], windows: QaWindows,
             batch_size: int) -> tuple[dict, np.ndarray]:
    """One method at one budget on ``windows``, the runtime's windows of ``examples`` (the same for every graph)."""
    cutting = method == "truncation"
    session = graphs.session("learned", 1.0) if cutting else graphs.session(method, budget)
    cut = truncated(windows, budget) if cutting else None
    run_on = windows if cut is None else cut
    settings = session.metadata.question_answering or {}
    plan = Cut(run_on, runtime_batches(session, run_on, batch_size), int(settings["max_answer_length"]))
    decoded = plan.decoded(examples, *graph_logits(session, run_on, plan.batches))
    scores, f1 = per_question(decoded.spans, examples)
    numerators = (session.metadata.schedule or {}).get("numerators")
    schedule = KeepSchedule(tuple(numerators)) if numerators and budget < 1.0 and cut is None else None
    row = {"budget": budget, "method": method if budget < 1.0 else "full",
           "exact_match": round(scores["exact_match"], 2), "f1": round(scores["f1"], 2),
           **dict(zip(("cost", "token_cost"), costs(session, windows, schedule, cut), strict=True)),
           "windows": len(windows),
           "mean_window_tokens": round(float(np.mean(run_on.lengths)), 1),
           "graph_seconds": round(decoded.seconds, 2)}
    print(f"  b={budget:g} {row['method']}: EM {row['exact_match']:.2f} F1 {row['f1']:.2f} cost {row['cost']:.3f}",
          flush=True)
    return row, f1


def paired_interval(learned: np.ndarray, baseline: np.ndarray, draws: int = 2000) -> list[float]:
    """95% paired bootstrap interval of the mean per-question F1 difference, in points."""
    diff = learned - baseline
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), size=(draws, len(diff)))].mean(axis=1)
    return [round(float(v) * 100, 2) for v in np.percentile(means, [2.5, 97.5])]


def gaps(rows: list[dict], f1: dict[tuple[str, float], np.ndarray]) -> list[dict]:
    """Learned minus each baseline at each budget, F1 points, with the paired interval."""
    out = []
    for row in rows:
        if row["budget"] >= 1.0 or row["method"] == "learned":
            continue
        key = (row["method"], row["budget"])
        learned = f1[("learned", row["budget"])]
        out.append({"budget": row["budget"], "baseline": row["method"],
                    "f1_gap": round(100 * float((learned - f1[key]).mean()), 2),
                    "interval95": paired_interval(learned, f1[key])})
    return out


def latency(graphs: Graphs, rounds: int) -> list[dict]:
    """Learned at TIMED_BUDGET against the full graph, interleaved, at the trained window length."""
    sessions = {TIMED_BUDGET: graphs.session("learned", TIMED_BUDGET), 1.0: graphs.session("learned", 1.0)}
    runners = {}
    for batch in TIMED_BATCHES:
        for budget, session in sessions.items():
            feeds = timing_feeds(session, batch, graphs.window)
            runners[f"{budget:g}/{batch}"] = lambda s=session, f=feeds: s.run(**f)
    medians = interleaved_medians(runners, rounds=rounds, per_round=1)
    rows = []
    for batch in TIMED_BATCHES:
        full = medians[f"1/{batch}"]
        for budget in sessions:
            ms = medians[f"{budget:g}/{batch}"]
            rows.append({"budget": budget, "batch": batch, "seq_len": graphs.window, "median_ms": round(1000 * ms, 2),
                         "sequences_per_s": round(batch / ms, 2), "speedup_vs_full": round(full / ms, 3)})
    return rows


def run(args: argparse.Namespace, work: Path) -> dict:
    started = time.perf_counter()
    checkpoint = RetentionCheckpoint.from_pretrained(args.checkpoint, attn_implementation="eager")
    if checkpoint.model.config.task != QUESTION_ANSWERING.task:
        raise AdaretError(f"{args.checkpoint} is a {checkpoint.model.config.task} checkpoint; this benchmark needs "
                          "a question-answering one")
    data, examples = questions(checkpoint, args.data, args.max_examples, args.seed)
    settings = checkpoint.info.training["question_answering"]
    window = min(int(settings["max_length"]), checkpoint.model.encoder.max_positions)
    graphs = Graphs(Path(args.checkpoint), window, work, args.threads)
    # Significance needs a layer before the first pruned one; with a gated first layer it does not apply.
    methods = [m for m in METHODS if not (m == "significance" and "0" in checkpoint.model.gates)]
    # Cut once: every graph comes from this checkpoint, so the runtime cuts the same windows with each
    # (same tokenizer, window settings and length cap).
    windows = runtime_windows(graphs.session(methods[0], BUDGETS[0]), examples)
    rows, f1 = [], {}
    for budget in (*BUDGETS, 1.0):
        for method in methods if budget < 1.0 else ["learned"]:
            row, f1[(method, budget)] = evaluate(graphs, method, budget, examples, windows, args.batch_size)
            rows.append(row)
    full = rows[-1]["f1"]
    for row in rows:
        row["percent_of_full_f1"] = round(100 * row["f1"] / full, 1) if full else None
    return {"command": _command(args), "checkpoint": Path(args.checkpoint).name,
            "checkpoint_sha256": checkpoint.sha256, "data": data, "questions": len(examples), "seed": args.seed,
            "window_settings": settings, "training_budget": checkpoint.info.training.get("budget"),
            "keep_fractions": checkpoint.info.schedule["keep_fractions"],
            "methods_left_out": sorted(set(METHODS) - set(methods)), "rows": rows, "gaps": gaps(rows, f1),
            "latency": latency(graphs, args.rounds), "threads": args.threads or "onnxruntime default",
            "parity_max_abs_diff": graphs.parity, "export_seconds": graphs.export_seconds,
            "benchmark_seconds": round(time.perf_counter() - started, 1), "machine": machine()}


def _command(args: argparse.Namespace) -> str:
    """The command with the checkpoint and output named, not located (recorded results carry no machine paths)."""
    parts = [COMMAND, "--checkpoint", Path(args.checkpoint).name, "--max-examples", str(args.max_examples),
             "--seed", str(args.seed)]
    if args.data != SQUAD_DEV:
        parts += ["--data", Path(args.data).name]
    return " ".join(parts)


def render(payload: dict) -> str:
    windows = ", ".join(f"{name} {value}" for name, value in payload["window_settings"].items())
    lines = ["# SQuAD v1.1: learned retention against random, attention-significance and truncation", "",
             f"`{payload['command']}`", "",
             f"Checkpoint `{payload['checkpoint']}` (sha256 {payload['checkpoint_sha256'][:12]}, trained at budget "
             f"{payload['training_budget']}, learned schedule {payload['keep_fractions']}); {payload['data']}: "
             f"{payload['questions']} questions (random sample, seed {payload['seed']}); windows: {windows}. "
             f"Machine: {describe(payload['machine'])}; ONNX Runtime {payload['machine']['onnxruntime']}, threads: "
             f"{payload['threads']}.", "",
             "Every method is an exported graph run through `adaret.runtime` with the same windows, bucketing and "
             "decoding; truncation runs the full graph on cut windows (rule in the script's docstring). `cost`: "
             "executed token-layer slots relative to the full graph on the same windows padded as the runtime pads "
             "them; `token cost`: real tokens processed per layer, relative to the full model.", "",
             "| budget | method | EM | F1 | % of full F1 | cost | token cost |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in payload["rows"]:
        lines.append(f"| {r['budget']:g} | {r['method']} | {r['exact_match']:.2f} | {r['f1']:.2f} | "
                     f"{r['percent_of_full_f1']}% | {r['cost']:.3f} | {r['token_cost']:.3f} |")
    lines += ["", "Learned minus each baseline, F1 points (paired 95% bootstrap interval over the questions):", ""]
    lines += [f"- b{g['budget']:g} vs {g['baseline']}: {g['f1_gap']:+.2f} [{g['interval95'][0]:+.2f}, "
              f"{g['interval95'][1]:+.2f}]" for g in payload["gaps"]]
    if payload["methods_left_out"]:
        lines += ["", f"Left out: {', '.join(payload['methods_left_out'])} (the first layer is gated)."]
    lines += ["", f"## ONNX Runtime latency, learned {TIMED_BUDGET:g} against full", "",
              "Synthetic full-length windows, interleaved rounds with a settle call (benchmarks/common.py).", "",
              "| budget | batch | seq | median ms | sequences/s | speed-up |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['budget']:g} | {r['batch']} | {r['seq_len']} | {r['median_ms']:.2f} | {r['sequences_per_s']:.1f} "
              f"| {r['speedup_vs_full']:.2f}x |" for r in payload["latency"]]
    parity = payload["parity_max_abs_diff"]
    lines += ["", f"Export parity (max |logit diff| ONNX Runtime vs PyTorch): at most {max(parity.values()):.1e} over "
              f"the {len(parity)} graphs. Benchmark {payload['benchmark_seconds']} s.", ""]
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="question-answering retention checkpoint")
    parser.add_argument("--data", default=SQUAD_DEV, help="squad-dev (default) or a SQuAD-format JSON file")
    parser.add_argument("--max-examples", type=int, default=2000, help="questions in the random sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per ONNX Runtime call")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results stem: writes <out>.json, <out>.md")
    parser.add_argument("--overwrite", action="store_true", help="replace existing results files")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    json_path, md_path = args.out.with_name(args.out.name + ".json"), args.out.with_name(args.out.name + ".md")
    try:
        with contextlib.ExitStack() as claims, tempfile.TemporaryDirectory(prefix="adaret-qa-baselines-") as work:
            for path in (json_path, md_path):  # claimed before the exports, which take minutes
                claims.enter_context(output_file(path, overwrite=args.overwrite, what="results file"))
            payload = run(args, Path(work))
            with atomic_file(json_path) as tmp:
                tmp.write_text(json.dumps(payload, indent=2) + "\n")
            with atomic_file(md_path) as tmp:
                tmp.write_text(render(payload))
    except AdaretError as exc:
        print(f"qa_baselines: error: {exc}", file=sys.stderr)
        return 1
    print(render(payload))
    print(f"wrote {json_path.name} and {md_path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
