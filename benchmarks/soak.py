"""Soak: many mixed-length requests through one runtime Session; does memory or the file-handle count grow?

    python benchmarks/soak.py [--requests 10000] [--model DIR] [--threads 1]

Without --model it exports the bundled adapter at 0.4 first. Each request classifies 1-4 texts cut from
held-out BBC News articles to a random length (1 word up to the whole article, so every bucket width is
hit, truncation included). Every --sample requests it records the process's resident set size and its open
file descriptors. The RSS slope is a least-squares fit over the second half (after the allocator and the
ONNX Runtime arena have reached their working size); a leak shows as a positive slope that does not flatten.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, write_results


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--model", default=None, help="export directory (default: export the bundled adapter)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sample", type=int, default=100, help="record RSS and descriptors every N requests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="adaret-soak-") as work:
        model = args.model or export_default(Path(work))
        payload = soak(model, args)
    write_results("soak", payload, render(payload))


def export_default(work: Path) -> str:
    from adaret.export import ExportConfig, run_export
    from adaret.graph_passes.pipeline import optimize

    out = work / "export-b0.4"
    run_export(ExportConfig(budget=0.4, out=str(out), parity_batches=(1,), parity_lengths=(37,)), optimize)
    return str(out)


def soak(model: str, args: argparse.Namespace) -> dict:
    import adaret.runtime as rt
    from adaret.training.data import load_splits

    articles = load_splits("bbc-news", seed=0).eval.texts
    rng = np.random.default_rng(args.seed)
    session = rt.load(model, threads=args.threads)
    samples, tokens, started = [], 0, time.perf_counter()
    warnings.simplefilter("ignore", rt.TruncationWarning)
    for request in range(1, args.requests + 1):
        texts = []
        for _ in range(int(rng.integers(1, 5))):
            words = articles[int(rng.integers(len(articles)))].split()
            texts.append(" ".join(words[: int(rng.integers(1, len(words) + 1))]))
        session.classify(texts)
        tokens += sum(len(t.split()) for t in texts)
        if request % args.sample == 0:
            samples.append({"request": request, "rss_mib": round(rss_mib(), 2), "open_fds": open_fds()})
    seconds = time.perf_counter() - started
    second_half = samples[len(samples) // 2:]
    slope = np.polyfit([s["request"] for s in second_half], [s["rss_mib"] for s in second_half], 1)[0]
    return {"command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]), "machine": machine(),
            "requests": args.requests, "threads": args.threads, "seconds": round(seconds, 1),
            "words": tokens, "rss_mib_first": samples[0]["rss_mib"], "rss_mib_last": samples[-1]["rss_mib"],
            "rss_mib_max": max(s["rss_mib"] for s in samples),
            "rss_slope_mib_per_1000_requests_second_half": round(float(slope) * 1000, 4),
            "open_fds_min": min(s["open_fds"] for s in samples), "open_fds_max": max(s["open_fds"] for s in samples),
            "samples": samples}


def render(p: dict) -> str:
    return "\n".join([
        "# Soak: one runtime Session under mixed-length requests", "", f"`{p['command']}`", "",
        f"Machine: {describe(p['machine'])}. {p['requests']} requests of 1-4 texts (random cuts of held-out BBC "
        f"News articles, {p['words']} words in all) in {p['seconds']} s, ONNX Runtime CPU, {p['threads']} "
        "thread(s).", "",
        "| RSS first sample | RSS last | RSS max | RSS slope, second half | open descriptors (min-max) |",
        "| --- | --- | --- | --- | --- |",
        f"| {p['rss_mib_first']} MiB | {p['rss_mib_last']} MiB | {p['rss_mib_max']} MiB | "
        f"{p['rss_slope_mib_per_1000_requests_second_half']} MiB per 1000 requests | "
        f"{p['open_fds_min']}-{p['open_fds_max']} |", ""])


if __name__ == "__main__":
    main()
