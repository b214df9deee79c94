"""The side-by-side benchmark: the same as `adaret bench`, writing to benchmarks/results/ by default.

    python benchmarks/run.py [--checkpoint DIR] [--budgets 0.3,0.4,0.5] [--batch-size 8] [--seq-len 512]
                             [--max-examples N] [--threads N] [--plan model.plan] [--name bench]
    python benchmarks/run.py --max-examples 16 --budgets 0.4 --rounds 2 --memory-trials 1   # a quick look

See `adaret bench --help` for every option, and adaret/validation/bench.py for what each row measures.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from adaret.cli import build_parser, run_guarded

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(["bench", "--out", str(RESULTS), *argv])  # a later --out wins
    args.command_line = "python benchmarks/run.py " + shlex.join(argv)
    return run_guarded(args)


if __name__ == "__main__":
    sys.exit(main())
