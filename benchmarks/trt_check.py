"""TensorRT check on a GPU: fp16 engines for the full model and a retained budget, checked and timed.

    python benchmarks/trt_check.py [--checkpoint DIR] [--budgets 1.0,0.4] [--seq-len 512] [--batch 8]

For each budget: a static-K export for one bucket (with kept positions), an fp16 plan built by adaret's
builder (Polygraphy's loaders), a Polygraphy comparison against ONNX Runtime fp32 (logits within the fp16
tolerance, kept positions identical), the median GPU time of one enqueue over many runs (CUDA events), and
the activation device memory the engine reports (device_memory_size_v2). The issue's targets (MiniLM-L6,
seq 512, batch 8) are evaluated from these measurements. Where TensorRT or a GPU is missing it prints why
and stops without writing results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
THROUGHPUT_TARGET = 2.0  # budget engine vs full engine
MEMORY_TARGET = 0.35  # activation memory at least this much lower


def _missing_requirement() -> str | None:
    from adaret.core.errors import AdaretError
    from adaret.engines.environment import current_gpu, tensorrt_available

    if not tensorrt_available():
        return "tensorrt not installed"
    try:
        current_gpu()
    except AdaretError as exc:
        return f"no usable CUDA GPU ({exc})"
    return None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="default: the bundled BBC News MiniLM-L6 adapter")
    parser.add_argument("--budgets", default="1.0,0.4")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=500, help="timed runs per engine")
    parser.add_argument("--timing-cache", default=None)
    parser.add_argument("--work", default=None, help="keep exports and plans here (default: a temporary dir)")
    parser.add_argument("--name", default="trt_check")
    return parser.parse_args(argv)


def _one_budget(budget: float, args: argparse.Namespace, work: Path) -> dict:
    from adaret.core import graph_facts as gf
    from adaret.engines.builder import execute_build, prepare_build
    from adaret.engines.compare import compare, make_feeds
    from adaret.engines.environment import import_tensorrt
    from adaret.engines.trt_session import TrtPlanRunner
    from adaret.export import ExportConfig, run_export

    out = work / f"b{budget:g}"
    export = run_export(ExportConfig(budget=budget, checkpoint=args.checkpoint, out=str(out),
                                     seq_lens=(args.seq_len,), static=True, with_positions=True))
    onnx_path = export.graphs[0].path
    spec = f"1x{args.seq_len},{args.batch}x{args.seq_len},{max(32, args.batch)}x{args.seq_len}"
    plan = prepare_build(onnx_path, tensorrt_version=import_tensorrt().__version__, precision="fp16",
                         profiles=spec, timing_cache=args.timing_cache)
    built = execute_build(plan, out / "model.plan")
    report = compare(onnx_path, built.plan_path, batch=args.batch, iterations=4)
    vocab = gf.graph_vocabulary(gf.load_model(onnx_path), onnx_path.parent)
    feeds = make_feeds({name: "INT64" for name in built.sidecar.input_names}, args.batch, args.seq_len, vocab,
                       count=1)[0]
    with TrtPlanRunner(built.plan_path) as runner:
        timing = runner.benchmark(feeds, iterations=args.iterations)
    return {"budget": budget, "keep_counts": export.graphs[0].keep_counts, "plan_bytes": built.plan_path.stat().st_size,
            "activation_bytes": built.sidecar.device_memory_bytes[0], "timing": timing.as_dict(),
            "sequences_per_s": round(args.batch / (timing.median_ms / 1000), 1),
            "compare": {"passed": report.passed, "max_abs_diff": report.max_abs_diff,
                        "kept_positions_identical": all(report.exact_match.values()) if report.exact_match else None},
            "layers": built.summary.text(), "build_seconds": built.sidecar.build_seconds,
            "tensorrt": built.sidecar.tensorrt_version, "gpu": built.sidecar.gpu_name}


def _targets(rows: list[dict]) -> dict:
    by_budget = {row["budget"]: row for row in rows}
    full = by_budget.get(1.0)
    out = {}
    for budget, row in by_budget.items():
        if full is None or budget == 1.0:
            continue
        speedup = full["timing"]["median_ms"] / row["timing"]["median_ms"]
        saving = 1 - row["activation_bytes"] / full["activation_bytes"] if full["activation_bytes"] else None
        out[str(budget)] = {"throughput_vs_full": round(speedup, 3),
                            "throughput_target_met": speedup >= THROUGHPUT_TARGET,
                            "activation_saving": None if saving is None else round(saving, 3),
                            "memory_target_met": saving is not None and saving >= MEMORY_TARGET,
                            "accuracy_target_met": row["compare"]["passed"]}
    return out


def _markdown(payload: dict) -> str:
    lines = [f"# TensorRT check, seq {payload['seq_len']}, batch {payload['batch']}, fp16", "",
             f"Command: `{payload['command']}`", "",
             f"TensorRT {payload['rows'][0]['tensorrt']} on {payload['rows'][0]['gpu']}; timing: "
             f"{payload['rows'][0]['timing']['timing']}", "",
             "| budget | median ms | seq/s | activation MiB | plan MiB | vs ORT fp32 | kept positions |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in payload["rows"]:
        lines.append(f"| {r['budget']} | {r['timing']['median_ms']} | {r['sequences_per_s']} | "
                     f"{r['activation_bytes'] / 2**20:.1f} | {r['plan_bytes'] / 2**20:.1f} | "
                     f"{'pass' if r['compare']['passed'] else 'FAIL'} | {r['compare']['kept_positions_identical']} |")
    lines += ["", "Targets: " + "; ".join(f"budget {b}: {t}" for b, t in payload["targets"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    sys.path.insert(0, str(ROOT.parent))
    missing = _missing_requirement()
    if missing:
        print(f"not run: {missing}; no results written (nothing is measured without TensorRT and a GPU)")
        return 0
    sys.path.insert(0, str(ROOT))
    from common import machine, scratch_directory, write_results

    with scratch_directory("adaret-trt-check-", keep=args.work) as work:
        rows = [_one_budget(float(b), args, work) for b in args.budgets.split(",")]
    payload = {"command": "python " + " ".join(sys.argv), "seq_len": args.seq_len, "batch": args.batch,
               "machine": machine(), "rows": rows, "targets": _targets(rows)}
    write_results(args.name, payload, _markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
