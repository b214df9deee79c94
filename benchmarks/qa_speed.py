"""ONNX Runtime CPU latency of the question-answering graph, budget 0.4 against 1.0, side by side, and where the
retained graph's time goes.

    python benchmarks/qa_speed.py [--checkpoint CK] [--budgets 0.4] [--rounds 30] [--threads 2] [--profile]

A graph's latency depends on its shapes, not its weights: K_l follows the window length alone, and the question
segment is ranked inside K_l (docs/question_answering.md). So, without ``--checkpoint``, the benchmark builds a
MiniLM-L6 question-answering checkpoint with untrained gates and the keep schedule that the recorded CPU training
run learned (``results/qa_training.json``), and exports that; with ``--checkpoint``, a trained one is used as is.

Every budget is exported as ``adaret validate`` exports it (parity gate and ``ort-cpu`` passes included), and the
same unoptimised graph also goes through the ``ort-cpu`` passes without ``row-scatter``, so that pass's effect is
measured in the same run. Timing: full-length 384-token windows with a question segment, batch 1 and 8, through
``adaret.runtime`` with its default options, interleaved rounds with settle calls (``adaret.core.timing``).
``--profile`` adds ONNX Runtime's per-operator profile of each graph at batch 1, summed by operator type.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, describe, machine, scratch_directory, write_results

from adaret.core.io_spec import QUESTION_ANSWERING
from adaret.core.timing import interleaved_seconds
from adaret.graph_passes.pipeline import TARGET_PASSES, optimize
from adaret.modeling import RetentionConfig, RetentionModel
from adaret.modeling.encoders import load_encoder
from adaret.modeling.hf_loading import load_tokenizer
from adaret.runtime import load
from adaret.training.checkpoint import CheckpointInfo, RetentionCheckpoint, resolve_model_source
from adaret.training.config import PACKAGED_MODEL
from adaret.validation.evaluate import latency_summary
from adaret.validation.question_answering import export_graph, open_graph, timing_feeds

COMMAND = "python benchmarks/qa_speed.py"
BATCHES = (1, 8)
WINDOWS = {"max_length": 384, "doc_stride": 128, "max_query_length": 64, "max_answer_length": 30}


def recorded_schedule() -> list[float]:
    """The keep fractions the recorded CPU question-answering run learned."""
    return json.loads((RESULTS / "qa_training.json").read_text())["schedule"]["keep_fractions"]


def shape_checkpoint(path: Path, fractions: list[float]) -> Path:
    """MiniLM-L6 with a span head and untrained gates, carrying ``fractions`` as its measured schedule."""
    model_dir = resolve_model_source(PACKAGED_MODEL)
    encoder = load_encoder(model_dir)
    model = RetentionModel(encoder, RetentionConfig(label_names=[], task=QUESTION_ANSWERING.task)).eval()
    model_type = encoder.config.model_type
    info = CheckpointInfo(
        base_model={"source": PACKAGED_MODEL, "model_type": model_type, "name": "all-MiniLM-L6-v2",
                    "in_checkpoint": True, "weights_sha256": None,
                    "config": encoder.config.to_diff_dict() | {"model_type": model_type}},
        retention={}, training={"budget": 0.4, "seed": 0, "task": QUESTION_ANSWERING.task,
                                "question_answering": WINDOWS},
        schedule={"keep_fractions": fractions, "measured_on": "results/qa_training.json (shapes only)",
                  "budget": sum(fractions) / len(fractions)},
    )
    RetentionCheckpoint(model, load_tokenizer(model_dir), info).save_pretrained(path)
    return path


def operator_profile(path: Path, feeds: dict, threads: int, runs: int, work: Path) -> dict[str, float]:
    """Mean milliseconds per run spent in each operator type (ONNX Runtime's profiler, after a warm-up run)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(work / "profile")
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    for _ in range(runs):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000 / (runs + 1)
    return dict(sorted(per_op.items(), key=lambda item: -item[1]))


def markdown(payload: dict) -> str:
    lines = ["# Question answering: ONNX Runtime CPU latency, retained against full", "",
             f"Command: `{payload['command']}`", "", f"Machine: {describe(payload['machine'])}.", "",
             payload["note"], "",
             "| budget | graph passes | batch | seq_len | median ms | p95 ms | windows/s | speed-up vs 1.0 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in sorted(payload["rows"], key=lambda r: (r["batch"], r["passes"], -r["budget"])):
        lines.append(f"| {row['budget']:g} | {row['passes']} | {row['batch']} | {row['seq_len']} | "
                     f"{row['median_ms']} | {row['p95_ms']} | {row['sequences_per_s']} | {row['speedup_vs_full']} |")
    switch = payload["after_switch_ms"]
    lines += ["", f"Batch-1 calls of the {switch['budget']:g} graph right after one call of the full graph (ms, median "
              f"of 10; call 1 first): {', '.join(str(ms) for ms in switch['calls'])}. The timings above make two "
              "untimed settle calls before each timed one for this reason."]
    for budget, ops in payload.get("profile", {}).items():
        total = sum(ops.values())
        lines += ["", f"Operator time at batch 1, budget {budget} (ONNX Runtime profiler, mean ms per run; "
                  f"sum {total:.1f} ms):", "", "| operator | ms | share |", "| --- | --- | --- |"]
        lines += [f"| {op} | {ms:.2f} | {ms / total:.1%} |" for op, ms in list(ops.items())[:12]]
    return "\n".join(lines) + "\n"


def without_pass(optimized: Path, left_out: str) -> Path:
    """The same unoptimised graph through the ``ort-cpu`` passes less ``left_out``, beside the full pipeline's."""
    passes = [name for name in TARGET_PASSES["ort-cpu"] if name != left_out]
    output = optimized.with_name(f"model.no-{left_out}.onnx")
    optimize(optimized.with_name("model.onnx"), output, passes=passes, overwrite=True)
    return output


def time_graphs(paths: dict[tuple[float, str], Path], threads: int | None, rounds: int) -> list[dict]:
    """Median and p95 of every graph at batch 1 and 8 on full-length windows, all interleaved."""
    calls, seq_len = {}, None
    for (budget, variant), path in paths.items():
        session = load(path, threads=threads)
        seq_len = seq_len or min(WINDOWS["max_length"], session.max_length)
        for batch in BATCHES:
            feeds = timing_feeds(session, batch, seq_len)
            calls[(budget, variant, batch)] = lambda s=session, f=feeds: s.run(**f)
    samples = interleaved_seconds(calls, rounds)
    rows = []
    for (budget, variant, batch), seconds in samples.items():
        summary = latency_summary(seconds, batch * len(seconds))
        rows.append({"budget": budget, "passes": variant, "batch": batch, "seq_len": seq_len,
                     "median_ms": round(1000 * statistics.median(seconds), 2), "p95_ms": summary["latency_p95_ms"],
                     "sequences_per_s": summary["throughput_per_s"]})
    full = {(r["passes"], r["batch"]): r["median_ms"] for r in rows if r["budget"] >= 1.0}
    for row in rows:
        row["speedup_vs_full"] = round(full[(row["passes"], row["batch"])] / row["median_ms"], 3)
    return rows


def switch_costs(full: Path, retained: Path, threads: int | None, repeats: int = 10, calls: int = 6) -> list[float]:
    """Milliseconds of the k-th batch-1 call of the retained graph right after one call of the full graph (median
    over ``repeats``): how many untimed settle calls a timing needs after switching sessions (adaret.core.timing)."""
    sessions = [load(path, threads=threads) for path in (full, retained)]
    feeds = [timing_feeds(session, 1, WINDOWS["max_length"]) for session in sessions]
    for session, feed in zip(sessions, feeds, strict=True):
        session.run(**feed)  # warm-up
    seconds: list[list[float]] = [[] for _ in range(calls)]
    for _ in range(repeats):
        sessions[0].run(**feeds[0])
        for k in range(calls):
            started = time.perf_counter()
            sessions[1].run(**feeds[1])
            seconds[k].append(time.perf_counter() - started)
    return [round(1000 * statistics.median(s), 2) for s in seconds]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a trained question-answering checkpoint (default: shapes only)")
    parser.add_argument("--budgets", default="0.4", help="retained budgets, timed against 1.0")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: cores)")
    parser.add_argument("--profile", action="store_true", help="add a per-operator profile at batch 1")
    parser.add_argument("--name", default="qa_speed")
    args = parser.parse_args(argv)
    budgets = [1.0] + [float(b) for b in args.budgets.split(",") if float(b) < 1.0]
    with scratch_directory("adaret-qa-speed-") as work:
        checkpoint_dir = Path(args.checkpoint) if args.checkpoint else shape_checkpoint(
            work / "checkpoint", recorded_schedule())
        checkpoint = RetentionCheckpoint.from_pretrained(checkpoint_dir)
        graphs = {budget: open_graph(export_graph(checkpoint_dir, checkpoint, budget, work), checkpoint)
                  for budget in budgets}
        paths = {}
        for budget, graph in graphs.items():
            paths[(budget, "ort-cpu")] = graph.path
            paths[(budget, "ort-cpu without row-scatter")] = without_pass(graph.path, "row-scatter")
        rows = time_graphs(paths, args.threads, args.rounds)
        after_switch = switch_costs(paths[(1.0, "ort-cpu")], paths[(budgets[-1], "ort-cpu")], args.threads)
        profile = {}
        if args.profile:
            for (budget, variant), path in paths.items():
                feeds = timing_feeds(graphs[budget].session, 1, rows[0]["seq_len"])
                profile[f"{budget:g}, {variant}"] = operator_profile(path, feeds, args.threads or 0, 10, work)
        schedules = {f"{budget:g}": graph.schedule.fractions for budget, graph in graphs.items()}
    source = args.checkpoint or "MiniLM-L6, untrained gates, the schedule learned in results/qa_training.json"
    payload = {
        "command": shlex.join([*COMMAND.split(), *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(), "checkpoint": source, "schedules": schedules, "rows": rows, "profile": profile,
        "after_switch_ms": {"budget": budgets[-1], "calls": after_switch},
        "note": (f"Checkpoint: {source}. Deployed keep fractions per layer: "
                 + "; ".join(f"{b}: [{', '.join(f'{f:.3f}' for f in fr)}]" for b, fr in schedules.items())
                 + f". Median and p95 over {args.rounds} interleaved rounds, two untimed settle calls before each "
                 "timed one (`adaret.core.timing`); the runtime's default session options. Each budget through "
                 "the whole `ort-cpu` pipeline and through the same pipeline without `row-scatter`; speed-ups "
                 "compare graphs of the same pipeline."),
    }
    write_results(args.name, payload, markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
