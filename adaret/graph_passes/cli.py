"""``adaret optimize``: registered into the top-level CLI."""

from __future__ import annotations

import argparse

from adaret.core.cli_args import add_command, tolerance_value
from adaret.core.constants import DEFAULT_TOLERANCE

TARGETS = ("ort-cpu", "ort-cpu-int8", "ort-cuda", "tensorrt")

DESCRIPTION = """Run adaret's graph passes over an exported ONNX graph. Each pass reports what it changed and is
checked against the unoptimised graph with ONNX Runtime on random inputs; a pass that breaks parity stops the run
with its name."""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "optimize", "run graph passes (fold, fuse, prune) on an exported graph", DESCRIPTION)
    p.add_argument("model", help="ONNX graph written by `adaret export`")
    p.add_argument("-o", "--output", required=True,
                   help="where to write the optimised graph (a new file, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing -o file")
    p.add_argument("--target", choices=TARGETS, default="ort-cpu",
                   help="pick the passes for a runtime; tensorrt skips ONNX Runtime contrib-op fusions; "
                        "ort-cpu-int8 leaves Q/K/V unpacked for `adaret calibrate` (default: %(default)s)")
    p.add_argument("--passes", default=None,
                   help="comma-separated pass names to run instead of the target's list")
    p.add_argument("--tolerance", type=tolerance_value, default=DEFAULT_TOLERANCE,
                   help="max |logit diff| allowed after each fp32 pass (default: %(default)s)")
    p.add_argument("--fp16", action="store_true",
                   help="finish with fp16 conversion (GPU targets; LayerNorm, Softmax, reductions and the gate "
                        "scores stay fp32; checked with a tolerance of 2e-2)")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from adaret.graph_passes.pipeline import optimize

    passes = [p.strip() for p in args.passes.split(",") if p.strip()] if args.passes else None
    result = optimize(Path(args.model), Path(args.output), target=args.target, passes=passes,
                      tolerance=args.tolerance, fp16=args.fp16, overwrite=args.overwrite)
    for report in result.reports:
        print(report.line())
    print(f"{result.nodes_before} -> {result.nodes_after} nodes; wrote {result.output} and {result.report_path}")
    return 0
