"""ONNX Runtime CPU throughput of exported top-M graphs at several budgets, against budget 1.0.

    python benchmarks/export_speed.py [--checkpoint DIR] [--budgets 0.3,0.4,0.5,1.0] [--batches 1,8]

Every graph comes from the same exporter (`adaret export`, dynamic form); budget 1.0 is the plain encoder
through that same pipeline. All sessions are timed in interleaved rounds in one process, and the ratios
are computed within the run. Export plus parity time per budget is recorded too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, machine, write_results

from adaret.export import ExportConfig, run_export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--budgets", default="0.3,0.4,0.5,1.0")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--name", default="export_speed")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    batches = [int(b) for b in args.batches.split(",")]

    work = Path(tempfile.mkdtemp(prefix="adaret-bench-"))
    sessions, export_seconds = {}, {}
    for budget in budgets:
        started = time.perf_counter()
        result = run_export(ExportConfig(budget=budget, checkpoint=args.checkpoint, out=str(work / f"b{budget}")))
        export_seconds[budget] = round(time.perf_counter() - started, 1)
        sessions[budget] = ort.InferenceSession(str(result.graphs[0].path), providers=["CPUExecutionProvider"])

    rows = []
    rng = np.random.default_rng(0)
    for batch in batches:
        ids = rng.integers(1000, 30000, size=(batch, args.seq_len), dtype=np.int64)
        ids[:, 0] = 101
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        runners = {b: (lambda s=s, f=feeds: s.run(None, f)) for b, s in sessions.items()}
        per_round = 3 if batch == 1 else 1
        medians = interleaved_medians(runners, rounds=args.rounds, per_round=per_round)
        for budget, seconds in medians.items():
            rows.append({"batch": batch, "budget": budget, "median_ms": round(1000 * seconds, 2),
                         "sequences_per_s": round(batch / seconds, 2),
                         "speedup_vs_1.0": round(medians[1.0] / seconds, 3) if 1.0 in medians else None})
    payload = {"command": "python " + " ".join(sys.argv), "seq_len": args.seq_len, "machine": machine(),
               "export_plus_parity_seconds": export_seconds, "rows": rows}
    lines = [f"# ONNX Runtime CPU throughput, seq {args.seq_len}", "",
             f"Command: `{payload['command']}`", "",
             f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores']} cores; "
             f"onnxruntime {payload['machine']['onnxruntime']}, torch {payload['machine']['torch']}", "",
             "| batch | budget | median ms | seq/s | speedup vs 1.0 |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['batch']} | {r['budget']} | {r['median_ms']} | {r['sequences_per_s']} | {r['speedup_vs_1.0']}x |"
              for r in rows]
    lines += ["", "Export + parity seconds per budget: "
              + ", ".join(f"{b}: {s}s" for b, s in export_seconds.items()), ""]
    json_path, md_path = write_results(args.name, payload, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
