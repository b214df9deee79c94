"""Peak inference memory on CPU, measured the way a deployment pays for it.

One fresh Python process per configuration: it imports ``module:function``, calls it with the keyword
arguments to load the model and build the inputs (the function returns the workload, a zero-argument
callable), records the resident set, resets the kernel's peak-RSS counter, runs the workload, and reads
the peak again. The result is the peak during inference minus the process after the model loaded:

    peak_delta = VmHWM (after the workload) - VmRSS (after load, before the workload)

Resetting the peak (writing 5 to /proc/self/clear_refs, Linux >= 4.0) matters: loading a model often
peaks higher than inference does (a protobuf and its weights are briefly both resident), and that load
peak would otherwise hide the workload. Where the reset is unavailable the child falls back to
getrusage's ru_maxrss and says so in ``method``; the number is then a lower bound.

Nothing here imports torch: a PyTorch workload brings torch into its own child process only.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaret.core.errors import AdaretError

if TYPE_CHECKING:
    from adaret.core.dummy_inputs import Vocabulary

RESULT_MARKER = "ADARET_MEMORY_RESULT "
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class MemoryMeasurement:
    baseline_rss_bytes: int  # after the model loaded, before the workload
    peak_rss_bytes: int  # the process peak while the workload ran
    method: str  # "clear_refs" (exact peak of the workload) or "ru_maxrss" (lower bound)
    repeats: int

    @property
    def peak_delta_bytes(self) -> int:
        return max(0, self.peak_rss_bytes - self.baseline_rss_bytes)

    @property
    def peak_delta_mib(self) -> float:
        return self.peak_delta_bytes / 2**20

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_delta_bytes": self.peak_delta_bytes,
                "peak_delta_mib": round(self.peak_delta_mib, 1)}


def measure_peak_rss(target: str, kwargs: Mapping[str, Any] | None = None, *, repeats: int = 1,
                     timeout: float = 900, env: Mapping[str, str] | None = None) -> MemoryMeasurement:
    """Run ``target`` (``"module:function"``; the function takes ``kwargs`` and returns the workload callable)
    in a fresh process; return its peak RSS during ``repeats`` calls of the workload, above the loaded baseline.
    ``kwargs`` must be JSON-serialisable."""
    spec = json.dumps({"target": target, "kwargs": dict(kwargs or {}), "repeats": repeats})
    try:
        done = subprocess.run([sys.executable, "-m", "adaret.runtime.memory", spec], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})}, check=False)
    except subprocess.TimeoutExpired:
        raise AdaretError(f"memory measurement of {target} did not finish in {timeout:.0f} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AdaretError(f"memory measurement of {target} failed (exit {done.returncode}): {tail}")
    return MemoryMeasurement(**json.loads(lines[-1].removeprefix(RESULT_MARKER)))


def _status_bytes(field: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    return None


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _reset_peak() -> bool:
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    module_name, _, function_name = spec["target"].partition(":")
    setup: Callable[..., Callable[[], object]] = getattr(importlib.import_module(module_name), function_name)
    workload = setup(**spec["kwargs"])
    gc.collect()
    exact = _reset_peak() and _status_bytes("VmHWM") is not None
    baseline = _status_bytes("VmRSS") if exact else _maxrss_bytes()
    for _ in range(spec["repeats"]):
        workload()
    peak = _status_bytes("VmHWM") if exact else _maxrss_bytes()
    return {"baseline_rss_bytes": baseline, "peak_rss_bytes": peak,
            "method": "clear_refs" if exact else "ru_maxrss", "repeats": spec["repeats"]}


# --- workloads (each returns the callable to measure) ----------------------------------------------------

def allocate_workload(mib: int) -> Callable[[], object]:
    """Touch ``mib`` MiB of fresh memory: a known allocation, to check that the measurement sees it."""
    def run() -> int:
        block = b"\x01" * (mib * 2**20)  # written, so every page is resident (a zeroed block may not be)
        return len(block)
    return run


def ort_workload(model: str, batch: int, seq_len: int, memory: str | None = None,
                 threads: int | None = None) -> Callable[[], object]:
    """One ``Session.run`` of the runtime on a [batch, seq_len] input of real-looking token ids, no padding."""
    from adaret.runtime.session import load

    session = load(model, memory=memory, threads=threads)
    feeds = synthetic_feeds(batch, seq_len, session.vocabulary)
    return lambda: session.run(**{k: v for k, v in feeds.items() if k in session.input_names})


def texts_workload(model: str, texts_file: str, batch_size: int = 8, memory: str | None = None,
                   threads: int | None = None, repeats: int = 2) -> Callable[[], object]:
    """``Session.classify`` over a JSON list of texts, ``repeats`` times: mixed lengths, so mixed bucket shapes,
    which is what a long-running deployment sees (and where allocators fragment)."""
    from adaret.runtime.session import load

    session = load(model, memory=memory, threads=threads)
    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))

    def run() -> None:
        for _ in range(repeats):
            session.classify(texts, batch_size)
    return run


def synthetic_feeds(batch: int, seq_len: int, vocab: Vocabulary, seed: int = 0) -> dict[str, Any]:
    """Full-length rows (no padding): the worst case a bucket of this length can see. CLS first, SEP last."""
    import numpy as np

    from adaret.core.dummy_inputs import dummy_inputs

    return dummy_inputs(batch, seq_len, vocab, np.random.default_rng(seed), padded=False)


if __name__ == "__main__":
    print(RESULT_MARKER + json.dumps(_child(json.loads(sys.argv[1]))), flush=True)
