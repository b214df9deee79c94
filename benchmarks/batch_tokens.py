"""Texts per second of one ONNX Runtime session against the shape of a run (rows x padded width): the measurement
behind `adaret serve --max-batch-tokens` (results/batch_tokens.{json,md}).

    python benchmarks/batch_tokens.py [--budgets 0.4 1.0] [--threads 1] [--seconds 2] [--rounds 3]

The demo model is exported at each budget (`export.py --budget B` into a scratch folder: retained 0.4 and full 1.0,
the two exports the serving benchmark serves) and loaded with `adaret.runtime.load`, with --threads intra-op
threads (the serving benchmark's 1 per instance). For every width and row count, random token
ids fill the whole width (no padding: the graph does the same work either way). The shapes run in interleaved
rounds (each shape's turn starts with one untimed settle call); each turn runs whole calls for --seconds, and a
shape's rate is the median over the rounds of texts per second. The best row count per width, and the padded tokens
(rows x width) it runs, show where batching stops paying on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, scratch_directory, write_results

from adaret.core.constants import DEFAULT_MEMORY_MODE, MEMORY_MODES
from adaret.core.dummy_inputs import Vocabulary, dummy_inputs

REPO = Path(__file__).resolve().parent.parent
WIDTHS = (64, 128, 256, 384, 512)
ROWS = (1, 2, 4, 8, 16)


def feeds_for(session, rows: int, width: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    vocabulary = Vocabulary.from_dict(session.metadata.vocabulary)
    return dummy_inputs(rows, width, vocabulary, rng, padded=False, names=session.input_names)


def rates(sessions: dict, seconds: float, rounds: int) -> dict[tuple[float, int, int], float]:
    """Median over rounds of texts per second, per (budget, width, rows)."""
    rng = np.random.default_rng(0)
    shapes = {(b, w, r): (session, feeds_for(session, r, w, rng)) for b, session in sessions.items()
              for w in WIDTHS for r in ROWS if w <= session.max_length}
    samples: dict[tuple[float, int, int], list[float]] = {shape: [] for shape in shapes}
    for round_index in range(rounds):
        for shape, (session, feeds) in shapes.items():
            session.run(**feeds)  # settle
            started, texts = time.perf_counter(), 0
            while (elapsed := time.perf_counter() - started) < seconds:
                session.run(**feeds)
                texts += shape[2]
            samples[shape].append(texts / elapsed)
        print(f"round {round_index + 1}/{rounds} done", flush=True)
    return {shape: statistics.median(values) for shape, values in samples.items()}


def render(payload: dict) -> str:
    rows = payload["rows"]
    lines = ["# Texts per second against the shape of one ONNX Runtime run", "", f"`{payload['command']}`", "",
             f"Machine: {describe(payload['machine'])}; onnxruntime {payload['machine']['onnxruntime']}. Exports: "
             f"the demo model at each budget, {payload['threads']} intra-op thread(s), CPU allocator "
             f"{payload.get('memory', 'no-arena')}. Texts per second, median over "
             f"{payload['rounds']} interleaved rounds of {payload['seconds']:g} s per shape; random ids fill the "
             "width.", "",
             "| budget | width | " + " | ".join(f"{r} row{'s' if r > 1 else ''}" for r in ROWS) +
             " | best (x of 1 row) | tokens per run at best |", "| --- | --- |" + " --- |" * (len(ROWS) + 2)]
    for budget in payload["budgets"]:
        for width in WIDTHS:
            found = {r["rows"]: r["texts_per_s"] for r in rows if r["width"] == width and r["budget"] == budget}
            if not found:
                continue
            best = max(found, key=found.get)
            lines.append(f"| {budget:g} | {width} | " + " | ".join(f"{found[r]:.1f}" for r in ROWS) +
                         f" | {best} row{'s' if best > 1 else ''} ({found[best] / found[1]:.2f}x) | {best * width} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.4, 1.0],
                        help="export budgets to measure (default: 0.4 1.0)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default: 1)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per shape and round (default: 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--memory", default=DEFAULT_MEMORY_MODE, choices=MEMORY_MODES,
                        help="ONNX Runtime CPU allocator (default: the runtime's, %(default)s; adaret serve: arena)")
    parser.add_argument("--name", default="batch_tokens", help="results name (default: %(default)s)")
    parser.add_argument("--work", default=None, metavar="DIR", help="keep the exports here (default: removed)")
    args = parser.parse_args()
    from adaret.runtime.session import load

    with scratch_directory("adaret-batch-tokens-", args.work) as work:
        sessions = {}
        for budget in args.budgets:
            export = work / f"export-b{budget}"
            print(f"exporting budget {budget} ...", flush=True)
            subprocess.run([sys.executable, str(REPO / "export.py"), "--budget", str(budget), "--out", str(export)],
                           check=True, cwd=REPO, stdout=subprocess.DEVNULL)
            sessions[budget] = load(export, threads=args.threads, memory=args.memory)
        found = rates(sessions, args.seconds, args.rounds)
    changed = (("--threads", args.threads, 1), ("--seconds", args.seconds, 2.0), ("--rounds", args.rounds, 3))
    shown = "python benchmarks/batch_tokens.py" + "".join(
        f" {flag} {value:g}" for flag, value, default in changed if value != default)
    shown += "".join(f" {flag} {value}" for flag, value, default in (
        ("--memory", args.memory, DEFAULT_MEMORY_MODE), ("--name", args.name, "batch_tokens")) if value != default)
    if args.budgets != [0.4, 1.0]:
        shown += " --budgets " + " ".join(f"{b:g}" for b in args.budgets)
    payload = {"command": shown, "machine": machine(), "budgets": args.budgets, "threads": args.threads,
               "memory": args.memory,
               "seconds": args.seconds, "rounds": args.rounds,
               "rows": [{"budget": b, "width": w, "rows": r, "texts_per_s": round(v, 2)}
                        for (b, w, r), v in found.items()]}
    write_results(args.name, payload, render(payload))


if __name__ == "__main__":
    main()
