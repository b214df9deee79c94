"""``adaret build`` and ``adaret compare``. Imports stay light: onnx, polygraphy and tensorrt load in the commands."""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from adaret.core.cli_args import tolerance_value
from adaret.core.errors import AdaretError
from adaret.core.outputs import output_file
from adaret.engines.decisions import HARDWARE_COMPAT, PRECISIONS, TARGETS
from adaret.engines.profiles import ProfileSpec, parse_profile_spec

BUILD_DESCRIPTION = ("Build a TensorRT plan from a static-K ONNX graph (one sequence bucket), with a JSON sidecar "
                     "(<plan>.json) and the engine inspector's layer report (<plan>.layers.json). With --check, only "
                     "run the TensorRT-readiness lint, which needs no TensorRT, and exit non-zero on blockers.")
COMPARE_DESCRIPTION = ("Compare a TensorRT plan (or a second ONNX graph) against an ONNX graph run by ONNX Runtime "
                       "in fp32, with Polygraphy's Comparator and tolerances that follow the plan's precision.")


def profiles_value(text: str) -> ProfileSpec:
    try:
        return parse_profile_spec(text)
    except AdaretError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub: argparse._SubParsersAction) -> None:
    _add_build(sub)
    _add_compare(sub)


def _add_build(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a TensorRT engine, or lint an ONNX graph for TensorRT (--check)",
                       description=BUILD_DESCRIPTION)
    p.add_argument("onnx", help="the ONNX graph (a static-K export: model_seq<N>.onnx, or its optimised form)")
    p.add_argument("-o", "--output", default=None,
                   help="plan to write, e.g. model.plan (a new file, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing -o plan and its <plan>.json and <plan>.layers.json")
    p.add_argument("--check", action="store_true", help="only lint the graph for TensorRT; no TensorRT needed")
    p.add_argument("--target", choices=TARGETS, default="datacenter",
                   help="datacenter GPUs, or Jetson Orin (TensorRT 10.x, DLA with GPU fallback, static shapes)")
    p.add_argument("--dla", action="store_true", help="with --check: also apply the DLA rules (implied by "
                                                      "--target jetson-orin)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="(default: %(default)s)")
    p.add_argument("--profiles", type=profiles_value, default=None, metavar="MIN,OPT,MAX",
                   help="BATCHxSEQ shapes, e.g. 1x128,8x512,32x512, or one shape for a static profile; the "
                        "sequence follows the graph's bucket (default batches 1,8,32)")
    p.add_argument("--timing-cache", default=None, metavar="PATH", help="read and update this timing cache")
    p.add_argument("--dla-core", type=int, default=None, metavar="N", help="DLA core for jetson-orin (default 0)")
    p.add_argument("--hardware-compat", choices=sorted(HARDWARE_COMPAT), default=None,
                   help="build a plan that runs on any Ampere or newer GPU (slower than a device-specific one)")
    p.add_argument("--optimization-level", type=int, default=3, metavar="0-5",
                   help="builder optimization level (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the lint report as JSON (with --check)")
    p.set_defaults(run=run_build)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare a TensorRT plan against ONNX Runtime (Polygraphy Comparator)",
                       description=COMPARE_DESCRIPTION)
    p.add_argument("reference", help="the ONNX graph, run by ONNX Runtime on the CPU in fp32")
    p.add_argument("candidate", help="the plan (with its sidecar <plan>.json), or another ONNX graph")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="tolerance set (default: the plan's precision, fp32 for ONNX)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the plan's OPT batch)")
    p.add_argument("--seq-len", type=int, default=None, help="sequence length (default: the graph's bucket)")
    p.add_argument("--iterations", type=int, default=3, help="random batches to compare (default: %(default)s)")
    p.add_argument("--atol", type=tolerance_value, default=None, help="override the precision's absolute tolerance")
    p.add_argument("--rtol", type=tolerance_value, default=None, help="override the precision's relative tolerance")
    p.set_defaults(run=run_compare)


def run_build(args: argparse.Namespace) -> int:
    if args.check:
        return _run_check(args)
    if not args.output:
        raise AdaretError("give the plan to write with -o model.plan (or lint only with --check)")
    from adaret.engines.builder import execute_build, prepare_build
    from adaret.engines.environment import import_tensorrt

    with _claim_build_outputs(Path(args.output), args.overwrite):  # before TensorRT and a build of minutes
        trt = import_tensorrt()
        plan = prepare_build(args.onnx, tensorrt_version=trt.__version__, target=args.target,
                             precision=args.precision, profiles=args.profiles, dla_core=args.dla_core,
                             hardware_compat=args.hardware_compat, optimization_level=args.optimization_level,
                             timing_cache=args.timing_cache)
        print(plan.lint.summary())
        for note in (*plan.decisions.notes, *plan.profile.notes):
            print(f"note: {note}")
        result = execute_build(plan, args.output)
    print(result.summary.text())
    dla = result.sidecar.layer_summary.get("build", {}).get("dla")
    if dla:
        print(f"before the build: {dla['dla_capable']} network layers DLA-capable, {dla['gpu_only']} GPU-only")
    memory = ", ".join(f"{b / 2**20:.1f} MiB" for b in result.sidecar.device_memory_bytes)
    print(f"wrote {result.plan_path} (TensorRT {result.sidecar.tensorrt_version}, {result.sidecar.gpu_name}; "
          f"activation memory per profile: {memory}), {result.sidecar_path.name}, {result.layers_path.name}")
    return 0


@contextlib.contextmanager
def _claim_build_outputs(plan: Path, overwrite: bool) -> Iterator[None]:
    """The plan and the two files written beside it: a stale sidecar must not be replaced silently either."""
    from adaret.engines.builder import LAYERS_SUFFIX
    from adaret.engines.sidecar import sidecar_path

    with contextlib.ExitStack() as claims:
        for path, what in ((plan, "plan"), (sidecar_path(plan), "plan sidecar"),
                           (plan.with_name(plan.name + LAYERS_SUFFIX), "layer report")):
            claims.enter_context(output_file(path, overwrite=overwrite, what=what))
        yield


def _run_check(args: argparse.Namespace) -> int:
    from adaret.engines.lint import lint_model

    path = Path(args.onnx)
    if not path.is_file():
        raise AdaretError(f"{path} does not exist")
    report = lint_model(path, target=args.target, dla=args.dla or args.target == "jetson-orin",
                        precision=args.precision if args.precision == "int8-qdq" else None)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.table())
    return 0 if report.passed else 1


def run_compare(args: argparse.Namespace) -> int:
    from adaret.engines.compare import compare

    report = compare(args.reference, args.candidate, precision=args.precision, batch=args.batch,
                     seq_len=args.seq_len, iterations=args.iterations, atol=args.atol, rtol=args.rtol)
    print(report.text())
    return 0 if report.passed else 1
