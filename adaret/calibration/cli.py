"""``adaret calibrate``: the keep schedule from data (--schedule-only), or INT8 QDQ post-training quantisation.

Imports stay light: torch, transformers and onnxruntime load inside the command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from adaret.calibration.int8.defaults import SMOOTH_ALPHA, TARGET_AGREEMENT
from adaret.core.cli_args import add_command, int_at_least, positive_int
from adaret.core.errors import AdaretError
from adaret.core.io_spec import QUESTION_ANSWERING

if TYPE_CHECKING:
    from adaret.calibration.checkpoint import QuantizeResult

DESCRIPTION = """Calibrate a retention model on data. Default: INT8 post-training quantisation of an exported graph
(QDQ, symmetric INT8, per-channel weights; the TopK score path, LayerNorm, Softmax, attention products and the head
stay fp32), after SmoothQuant, written with a calibration record (<output>.calibration.json) and ONNX Runtime's
calibration cache. If fewer than --target-agreement of the fp32 token choices survive on the calibration texts, the
MatMuls that move the most choices go back to fp32 until they do. For ONNX Runtime CPU, quantise an `adaret optimize
--target ort-cpu-int8` graph (its Q/K/V projections can be INT8); for TensorRT, model.onnx or a --target tensorrt
graph. With --schedule-only: re-measure the per-layer keep fractions on the data and write them into a checkpoint
(no retraining), with a plot of the decay. A question-answering export calibrates on SQuAD questions cut into its
recorded windows, and its head is the span head."""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "calibrate", "keep schedule from data, or INT8 QDQ quantisation of an export", DESCRIPTION)
    p.add_argument("--checkpoint", required=True, help="retention checkpoint directory the graph was exported from")
    p.add_argument("--data", default=None,
                   help="classification: bbc-news (default), rotten-tomatoes, or a .csv/.tsv/.jsonl/.json file "
                        "with text/label columns; question answering: squad (default: SQuAD v1.1 train) or a "
                        "SQuAD-format JSON file")
    p.add_argument("--split", choices=["train", "eval", "all"], default=None,
                   help="which part of the data (default: train for built-in sets, all for a file)")
    p.add_argument("--samples", type=positive_int, default=512,
                   help="calibration texts, or questions for question answering (default: %(default)s)")
    p.add_argument("--method", choices=["entropy", "minmax", "percentile"], default=None,
                   help="activation range method (default: percentile with --backend ort, entropy with modelopt)")
    p.add_argument("--backend", choices=["ort", "modelopt"], default="ort",
                   help="onnxruntime.quantization, or NVIDIA ModelOpt where installed (default: %(default)s)")
    p.add_argument("--onnx", default=None,
                   help="the fp32 graph to quantise: model.onnx for TensorRT, or an `adaret optimize --target "
                        "ort-cpu-int8` output for ONNX Runtime CPU")
    p.add_argument("-o", "--output", default=None,
                   help="INT8 model to write (e.g. model.int8.onnx); with --schedule-only, the checkpoint "
                        "directory to write (default: update --checkpoint in place)")
    p.add_argument("--schedule-only", action="store_true", help="only re-measure the per-layer keep schedule")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing -o model (with its record and cache), or with --schedule-only write "
                        "into a non-empty -o directory, replacing only the checkpoint's files there (updating "
                        "--checkpoint in place needs no flag: only its config.json and the plot are rewritten)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: the checkpoint's training seed)")
    p.add_argument("--max-length", type=int_at_least(2), default=None,
                   help="tokens per text (default: the checkpoint's training max_length); for question answering, "
                        "the longest padded window, as adaret.runtime.load(max_length=...) caps it (default: the "
                        "graph's position table; windows follow the export's settings)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="calibration batch size (default: %(default)s)")
    p.add_argument("--smooth-alpha", type=float, default=SMOOTH_ALPHA,
                   help="SmoothQuant strength in (0, 1]: how much of each activation channel's range moves into "
                        "the weights before INT8 (default: %(default)s)")
    p.add_argument("--no-smooth", action="store_true", help="quantise without SmoothQuant")
    p.add_argument("--target-agreement", type=float, default=TARGET_AGREEMENT,
                   help="share of fp32 token choices INT8 must keep on the calibration texts; below it, the most "
                        "sensitive MatMuls go back to fp32 (--backend ort; default: %(default)s)")
    p.add_argument("--no-search", action="store_true", help="quantise every planned MatMul, whatever the agreement")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    command = "adaret " + shlex.join(sys.argv[1:])
    if args.schedule_only:
        return _run_schedule(args)
    if not args.onnx or not args.output:
        raise AdaretError("INT8 calibration needs --onnx model.onnx and -o model.int8.onnx "
                          "(or pass --schedule-only to re-measure the keep schedule)")
    from adaret.calibration.checkpoint import QuantizeConfig, quantize

    result = quantize(QuantizeConfig(
        checkpoint=args.checkpoint, onnx=args.onnx, output=args.output, data=args.data, samples=args.samples,
        method=args.method, backend=args.backend, split=args.split, seed=args.seed, max_length=args.max_length,
        batch_size=args.batch_size, smooth_alpha=None if args.no_smooth else args.smooth_alpha,
        target_agreement=None if args.no_search else args.target_agreement, progress=not args.no_progress,
        command=command, overwrite=args.overwrite))
    _print_result(result)
    return 0


def _print_result(result: QuantizeResult) -> None:
    record = result.record
    excluded = ", ".join(f"{reason} {len(names)}" for reason, names in record.quantization["excluded"].items())
    unit = "questions" if record.data.get("task") == QUESTION_ANSWERING.task else "texts"
    print(f"wrote {result.output} ({result.output.stat().st_size / 2**20:.1f} MiB; {record.backend} {record.method}, "
          f"{record.data['samples']} {unit} of {record.data['dataset']}:{record.data['split']})")
    print(f"quantized {len(result.plan.quantize)} MatMuls; fp32 kept: {excluded}")
    if result.smoothing:
        print(f"SmoothQuant alpha {result.smoothing.alpha}: {len(result.smoothing.groups)} activations rescaled")
    if result.search:
        search = result.search
        rows = (f"{search.texts} calibration texts" if unit == "texts"
                else f"{search.texts} calibration windows of {search.examples} questions")
        print(f"token agreement on {rows}: {search.agreement_all_int8:.4f} all INT8"
              + (f", {search.agreement:.4f} with {', '.join(search.restored)} in fp32" if search.restored else "")
              + f"; 95% lower bound {search.agreement_lower:.4f} (target {search.target})")
    if result.agreement:
        print(f"fp32 vs INT8 on calibration {unit}: {result.agreement.summary()}")
    print(f"scales sha256 {record.scales_sha256[:16]}...; record {result.record_path}")
    for note in result.notes:
        print(f"note: {note}")


def _run_schedule(args: argparse.Namespace) -> int:
    from adaret.calibration.schedule.measure import calibrate_schedule, write_calibrated_checkpoint
    from adaret.calibration.schedule.plot import PLOT_NAME, plot_schedule
    from adaret.core.outputs import output_dir

    data = args.data or "bbc-news"
    out = Path(args.output or args.checkpoint)
    if out.suffix == ".onnx":
        raise AdaretError(f"with --schedule-only, -o is a checkpoint directory, not {out}")
    in_place = args.output is None or (out.is_dir() and out.resolve() == Path(args.checkpoint).resolve())
    # Claimed before the measurement, so that a busy, non-empty or file -o fails at once; in place, only the
    # checkpoint's config.json and the plot are rewritten.
    with output_dir(out, overwrite=args.overwrite or in_place, what="checkpoint directory"):
        checkpoint, calibration = calibrate_schedule(args.checkpoint, data, samples=args.samples,
                                                     split=args.split, max_length=args.max_length, seed=args.seed,
                                                     batch_size=args.batch_size, progress=not args.no_progress)
        path = write_calibrated_checkpoint(checkpoint, calibration, out, overwrite=args.overwrite)
        plot = plot_schedule(calibration, path / PLOT_NAME)
    shown = " ".join(f"{f:.3f}" for f in calibration.fractions)
    before = " ".join(f"{f:.3f}" for f in calibration.previous)
    print(f"keep fractions per layer: {shown}  (mean {calibration.budget:.3f}; before: {before})")
    print(f"wrote {path} (schedule measured on {calibration.source['samples']} texts of {data}); plot {plot}")
    return 0
