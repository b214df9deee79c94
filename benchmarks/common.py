"""Helpers shared by the benchmark scripts: machine facts and result files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from adaret.core import machine as core_machine
from adaret.core.timing import SETTLE_CALLS, interleaved_seconds

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """The core machine description (CPU, cores, ISA extensions) with the torch and ONNX Runtime versions."""
    import onnxruntime
    import torch

    return {**core_machine.machine(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


describe = core_machine.describe


@contextlib.contextmanager
def scratch_directory(prefix: str, keep: str | os.PathLike | None = None) -> Iterator[Path]:
    """A work folder for exports and checkpoints, removed on exit unless the user named one to keep.

    The benchmarks write gigabytes of ONNX files and checkpoints; a leaked folder per run fills a disk within a day.
    """
    if keep is not None:
        Path(keep).mkdir(parents=True, exist_ok=True)
        yield Path(keep)
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_results(name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write results/<name>.json and results/<name>.md, and print the markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown)
    print(markdown)
    print(f"wrote {json_path.name} and {md_path.name} in benchmarks/results")
    return json_path, md_path


def interleaved_medians(runners: dict[str, Callable[[], object]], rounds: int, per_round: int,
                        warmup: int = 2, settle: int = SETTLE_CALLS) -> dict[str, float]:
    """Median seconds per call of each runner, measured in interleaved rounds so drift hits all alike
    (``adaret.core.timing.interleaved_seconds``: each turn starts with ``settle`` untimed calls).

    In results/ort_speed.md as recorded before settle calls existed (budget 0.3, batch 1), the raw graph, which ran
    right after PyTorch, measured 24.9 ms, and the "+fold/cleanup" graph, identical because that pass changed
    nothing, measured 39.3 ms.
    """
    samples = interleaved_seconds(runners, rounds, per_round=per_round, warmup=warmup, settle=settle)
    return {name: statistics.median(values) for name, values in samples.items()}


def training_command(command: str, model_name: str = "MPNET") -> str:
    """A checkpoint's recorded ``adaret train`` command with this machine's directories replaced by placeholders
    (``--model`` by ``model_name``, ``--out`` by CK): a machine's paths do not belong in a results file."""
    words = command.split()
    for flag, name in (("--model", model_name), ("--out", "CK")):
        if flag in words[:-1]:
            words[words.index(flag) + 1] = name
    return " ".join(["adaret", *words[words.index("train") :]] if "train" in words else words)
