"""``adaret validate`` and ``adaret bench``. Nothing heavy at module level: the parser is built on every call."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from typing import TypeVar

from adaret.core.cli_args import add_command, budget_value, non_negative_float, positive_int, tolerance_value
from adaret.validation.defaults import DEFAULT_ACCURACY_FLOOR, DEFAULT_PARITY_TOLERANCE, DEFAULT_TRT_TOLERANCE

VALIDATE_DESCRIPTION = """On the same eval inputs, compare (a) the PyTorch full model, (b) PyTorch hard top-M and
(c) the ONNX Runtime graph (and a TensorRT plan) at each budget: accuracy, agreement with (a), max |logit diff|,
latency p50/p95, throughput and peak memory. Writes report.json, report.md and PNG plots; exits 1 when parity or the
accuracy floor fails."""
BENCH_DESCRIPTION = """Latency, throughput, peak memory and accuracy of PyTorch eager full and retained, ONNX
Runtime full (the baseline) and retained at several budgets, and TensorRT plans when given; writes <name>.json and
<name>.md with the command, the machine and the versions."""

T = TypeVar("T")


def budgets_value(text: str) -> tuple[float, ...]:
    values = tuple(budget_value(part) for part in text.split(",") if part.strip())
    if not values:
        raise argparse.ArgumentTypeError("give at least one budget, like 0.3,0.4,0.5,1.0")
    return values


def memory_modes_value(text: str) -> tuple[str, ...]:
    from adaret.runtime.options import MEMORY_MODES

    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [v for v in values if v not in MEMORY_MODES]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"memory modes are {', '.join(MEMORY_MODES)}; got {text!r}")
    return values


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default=None,
                   help="retention checkpoint directory (default: the bundled BBC News MiniLM-L6 adapter)")
    p.add_argument("--data", default=None,
                   help="bbc-news, rotten-tomatoes, or a .csv/.tsv/.jsonl/.json file; its eval split is used "
                        "(default: the data the checkpoint was trained on, with its seed)")
    p.add_argument("--text-column", default="text", help="text column of a data file; if absent, the one "
                   "usual alternative present (sentence, review, ...)")
    p.add_argument("--label-column", default="label", help="label column of a data file; if absent, the one "
                   "usual alternative present (category, class, ...)")
    p.add_argument("--max-examples", type=positive_int, default=None,
                   help="evaluate an evenly spaced subset of this many eval examples (default: all)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="examples per batch (default: %(default)s)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for PyTorch and ONNX Runtime alike (default: the libraries' own choice)")
    p.add_argument("--plan", dest="plans", action="append", default=[], metavar="MODEL.plan",
                   help="also run this TensorRT plan (needs tensorrt and a GPU); may be repeated")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "validate", "compare PyTorch full, PyTorch top-M and the deployed graphs on eval data",
                    VALIDATE_DESCRIPTION)
    _common(p)
    p.add_argument("target", nargs="?", default=None, metavar="EXPORT_OR_CHECKPOINT",
                   help="question answering and summarization: the export to validate (with --checkpoint), or a "
                        "checkpoint to export at --budgets (default: its training budget)")
    p.add_argument("--task", choices=("sequence-classification", "question-answering", "summarization"),
                   default="sequence-classification",
                   help="question-answering: SQuAD EM/F1 of PyTorch full, PyTorch hard top-M and the export "
                        "through adaret.runtime, on a fixed random sample of --max-examples questions (default "
                        "2000); --data squad-dev or a SQuAD-format file. summarization: ROUGE-1/2/L of PyTorch full "
                        "(the reference decoder), PyTorch hard top-M and the export's greedy summaries, on a fixed "
                        "random sample of --max-examples test documents (default 300), and the export's encoder, "
                        "decoder and end-to-end time, cross-attention cache and peak memory against the checkpoint "
                        "exported at 1.0; --data bbc-headlines, aclsum or a .jsonl/.json/.csv/.tsv file "
                        "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="question answering and summarization: the seed of the random sample of questions or "
                        "documents (default: %(default)s)")
    p.add_argument("--summary-column", default="summary", help="summarization: summary column of a data file")
    p.add_argument("--full-export", default=None, metavar="EXPORT",
                   help="summarization: the checkpoint exported at budget 1.0, the speed and memory baseline "
                        "(default: exported into --out/exports/b1)")
    p.add_argument("--onnx", action="append", default=[], metavar="MODEL.onnx",
                   help="an exported graph (or export directory) to validate; may be repeated (default: export "
                        "one at each of --budgets)")
    p.add_argument("--budgets", type=budgets_value, default=None, metavar="B[,B...]",
                   help="budgets to export and compare when no --onnx is given (default: 0.3,0.4,0.5,1.0)")
    p.add_argument("--out", default="out/validate",
                   help="report directory, new or empty unless --overwrite (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out, replacing only the files this command writes")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="device of the PyTorch reference; ONNX Runtime uses its installed providers "
                        "(default: %(default)s)")
    p.add_argument("--parity-tolerance", type=tolerance_value, default=DEFAULT_PARITY_TOLERANCE,
                   help="max |logit diff| of an ONNX graph against PyTorch hard top-M at its budget "
                        "(default: %(default)s)")
    p.add_argument("--trt-tolerance", type=tolerance_value, default=DEFAULT_TRT_TOLERANCE,
                   help="the same for a TensorRT plan, which may run in fp16 (default: %(default)s)")
    p.add_argument("--accuracy-floor", type=non_negative_float, default=DEFAULT_ACCURACY_FLOOR,
                   help="each retained model's accuracy must be at least this fraction of the full model's "
                        "(default: %(default)s, the paper's >= 95%% at 30-50%% of tokens)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the peak-memory measurements (one subprocess per configuration)")
    p.set_defaults(run=_run_validate)

    b = add_command(sub, "bench", "side-by-side benchmark: PyTorch, ONNX Runtime (and TensorRT), full vs retained",
                    BENCH_DESCRIPTION)
    _common(b)
    b.add_argument("--budgets", type=budgets_value, default=(0.3, 0.4, 0.5), metavar="B[,B...]",
                   help="retained budgets (budget 1.0 is always the full baseline) (default: 0.3,0.4,0.5)")
    b.add_argument("--seq-len", type=positive_int, default=512, help="timed sequence length (default: %(default)s)")
    b.add_argument("--rounds", type=positive_int, default=5,
                   help="interleaved timing rounds (default: %(default)s)")
    b.add_argument("--memory-trials", type=positive_int, default=3,
                   help="fresh processes per memory measurement; the median is reported (default: %(default)s)")
    b.add_argument("--ort-modes", type=memory_modes_value, default=("no-arena", "arena"), metavar="MODE[,MODE...]",
                   help="ONNX Runtime CPU allocator settings to time and measure each graph with: no-arena (the "
                        "runtime's default), arena, arena-same-as-requested (default: no-arena,arena)")
    b.add_argument("--out", default="benchmarks/results", help="results directory (default: %(default)s)")
    b.add_argument("--name", default="bench",
                   help="results file stem; <name>.json and <name>.md must be new unless --overwrite "
                        "(default: %(default)s)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing <name>.json and <name>.md")
    b.set_defaults(run=_run_bench)


def _command() -> str:
    return "adaret " + shlex.join(sys.argv[1:])


def _run_validate(args: argparse.Namespace) -> int:
    if args.task == "question-answering":
        return _run_validate_qa(args)
    if args.task == "summarization":
        return _run_validate_summarization(args)
    if args.target is not None:
        from adaret.core.errors import AdaretError

        raise AdaretError("EXPORT_OR_CHECKPOINT is for --task question-answering or summarization; for "
                          "classification give --checkpoint and --onnx")
    from adaret.validation.report import ValidationConfig, run_validation

    config = _config_from_args(ValidationConfig, args)
    return _verdict(run_validation(config), args.out)


def _run_validate_qa(args: argparse.Namespace) -> int:
    from adaret.validation.question_answering import QaValidationConfig, run_qa_validation

    config = _config_from_args(QaValidationConfig, args)
    return _verdict(run_qa_validation(config), args.out)


def _run_validate_summarization(args: argparse.Namespace) -> int:
    from adaret.validation.summarization import SummarizationValidationConfig, run_summarization_validation

    config = _config_from_args(SummarizationValidationConfig, args)
    return _verdict(run_summarization_validation(config), args.out)


def _config_from_args(config_class: type[T], args: argparse.Namespace) -> T:
    """``config_class`` with each of its fields taken from the flag of the same name, so a field that gains a
    flag cannot be left out here; ``command`` is the command line as typed."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
              if f.init and hasattr(args, f.name)}
    values["command"] = getattr(args, "command_line", None) or _command()
    return config_class(**values)


def _verdict(report: dict, out: str) -> int:
    for check in report["checks"]:
        print(f"{'ok  ' if check['passed'] else 'FAIL'} {check['check']} {check['target']}: {check['detail']}")
    print(f"{'passed' if report['passed'] else 'FAILED'}; report: {out}/report.md")
    return 0 if report["passed"] else 1


def _run_bench(args: argparse.Namespace) -> int:
    from adaret.validation.bench import BenchConfig, run_bench

    config = _config_from_args(BenchConfig, args)
    json_path, md_path = run_bench(config)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    return 0
