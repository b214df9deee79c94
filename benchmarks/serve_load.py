"""Load test of `adaret serve`: concurrent clients send BBC News articles to the text model of the bundled Triton
server; retained 0.4 against full 1.0, dynamic batching on and off, side by side in one run.

    python benchmarks/serve_load.py [--seconds 120 | --requests N] [--rounds 6] [--clients 16]
                                    [--instances 2] [--threads 1] [--export-04 DIR] [--export-10 DIR]
    python benchmarks/serve_load.py --soak 5000 [--export-04 DIR]

Load mode (results/serve_load.{json,md}). Four servers (`adaret serve` of each export, with
`--max-queue-delay-us` or `--no-dynamic-batching`, every other setting the same) start one after the other and stay
up for the whole run. Each gets --warmup untimed requests, then the timed load runs in --rounds rounds: in each round
every configuration in turn (the order rotates by one each round) gets --settle untimed requests and then a timed
slice of --seconds/--rounds seconds (or --requests/--rounds requests). One client process keeps --clients requests in
flight (asyncio, tritonclient's aio HTTP client: one coroutine per client, so the client's own CPU use stays low; it
shares the cores with the server). Each request is one held-out text of --dataset (default: a BBC News article,
120-3482 words; the model reads the first 512 tokens), all configurations drawing the same shuffled sequence. A
request fails on any exception or error response, or an answer without one label and one probability row per text.
Latency is send to answer. Triton's statistics give the requests per execution: the mean batch the batcher formed.

Server memory: the resident set of the server's process tree (tritonserver and its Python-backend stub processes,
one per model instance; read from /proc) every --sample-every seconds while that server is under load, plus at
start, after warm-up and at the end. The slope, in MiB per 1,000 requests, is the least-squares fit of those samples
against the server's request count after warm-up. Open file descriptors of the tree at start, after warm-up, at the
end (client connections still open) and after the client closed its connections.

Soak mode (--soak N; results/serve_soak.{json,md}): one server (the --soak-budget export, dynamic batching), --warmup
requests, then N requests of 1-4 texts cut from held-out texts of --dataset at random lengths (as benchmarks/soak.py, so
every padding bucket and truncation is hit) with --clients in flight; the same memory and descriptor records.

Settings for a 2-core CPU: --instances model instances (Triton Python-backend processes, each with its own ONNX
Runtime session) per model and --threads ONNX Runtime intra-op threads per instance ($ADARET_SERVE_THREADS, read by
adaret.serving.backend). The default, 2 instances x 1 thread, keeps instances x threads at the core count: two
requests or batches run at once, each on one core, with no intra-op thread pool to synchronise (or spin) and
nothing oversubscribed. All configurations share them. Every server is stopped (SIGTERM, then SIGKILL of what is
left of its process tree) when the script ends or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import describe, machine, write_results

from adaret.core.constants import MEMORY_MODES
from adaret.serving.cli import DEFAULT_MAX_BATCH_TOKENS, SERVE_MEMORY_MODE
from adaret.serving.server import Ports

REPO = Path(__file__).resolve().parent.parent
THREADS_VARIABLE = "ADARET_SERVE_THREADS"  # adaret.serving.backend reads it in each model instance
TEXT_MODEL = "adaret_text"
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20


# --- the server's process tree, from /proc ------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])  # the name in parentheses may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children, pids, stack = _children(), [], [root]
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(children.get(pid, []))
    return pids


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def tree_usage(root: int) -> dict:
    """RSS (MiB, summed over the processes) and open descriptors of ``root``'s tree; processes that vanish are
    skipped."""
    rss_pages, fds, processes = 0, 0, 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/statm") as handle:
                rss_pages += int(handle.read().split()[1])
            fds += len(os.listdir(f"/proc/{pid}/fd"))
            processes += 1
        except OSError:
            continue
    return {"rss_mib": round(rss_pages * PAGE_MIB, 2), "open_fds": fds, "processes": processes}


# --- one `adaret serve` -------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: SIGTERM when this script dies (then `adaret serve` stops its server)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    """``adaret serve EXPORT`` on free ports; ``root`` is the tritonserver process under it."""

    label: str
    export: str
    dynamic: bool
    args: argparse.Namespace
    log: Path
    process: subprocess.Popen | None = None
    root: int | None = None
    known: set[int] = field(default_factory=set)  # every pid seen in the tree, for the final cleanup
    served: int = 0  # requests answered or failed, warm-up and settle included

    def start(self) -> None:
        http, grpc, metrics = astuple(Ports.free())
        self.port = http
        batching = (["--max-queue-delay-us", str(self.args.max_queue_delay_us)] if self.dynamic
                    else ["--no-dynamic-batching"])
        command = [str(Path(sys.executable).with_name("adaret")), "serve", self.export, "--port", str(http),
                   "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--max-batch", str(self.args.max_batch),
                   *batching, "--instances", str(self.args.instances), "--exit-timeout-secs", "10",
                   "--max-batch-tokens", str(self.args.max_batch_tokens), "--memory", self.args.memory]
        env = {**os.environ, THREADS_VARIABLE: str(self.args.threads)}
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True, preexec_fn=_die_with_parent)
        from adaret.serving.server import wait_ready

        if not wait_ready(self.process, http, timeout=self.args.start_timeout):
            tail = self.log.read_text(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(f"{self.label}: the server did not become ready:\n" + "\n".join(tail))
        servers = [pid for pid in tree(self.process.pid) if _name(pid) == "tritonserver"]
        if len(servers) != 1:
            raise RuntimeError(f"{self.label}: expected one tritonserver under adaret serve, found {len(servers)}")
        self.root = servers[0]

    def usage(self) -> dict:
        assert self.root is not None
        self.known.update(tree(self.root))
        return tree_usage(self.root)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            if self.root is not None:
                self.known.update(tree(self.root))
            self.process.send_signal(signal.SIGTERM)  # adaret serve forwards it; Triton drains and exits

    def reap(self, timeout: float = 30.0) -> None:
        """Wait for the stop; then SIGKILL whatever of this server is left, by pid."""
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in sorted(self.known):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if _name(pid) in ("tritonserver", "triton_python_backend_stub"):
                    os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    """Start ``servers`` one after the other; stop all of them however the block ends."""
    try:
        for server in servers:
            started = time.perf_counter()
            server.start()
            print(f"{server.label}: ready in {time.perf_counter() - started:.1f} s", flush=True)
        yield
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.reap()


# --- requests ------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the timed slices
    slice_rps: list[float] = field(default_factory=list)  # answered requests per second of each timed slice
    # Triton's own counts over the timed slices: requests the model ran, and executions (the batches it formed)
    inferences: int = 0
    executions: int = 0

    def count_batches(self, before: tuple[int, int], after: tuple[int, int]) -> None:
        self.inferences += after[0] - before[0]
        self.executions += after[1] - before[1]

    @property
    def requests_per_execution(self) -> float | None:
        return round(self.inferences / self.executions, 2) if self.executions else None

    @property
    def requests(self) -> int:
        return len(self.latencies) + len(self.failures)


async def model_counts(client) -> tuple[int, int]:
    """The text model's (inference count, execution count) from Triton's statistics endpoint: their ratio is the
    mean batch the dynamic batcher formed (1 without it)."""
    stats = (await client.get_inference_statistics(TEXT_MODEL))["model_stats"][0]
    return int(stats["inference_count"]), int(stats["execution_count"])


def make_request(texts: list[bytes]):
    import tritonclient.http.aio as aioclient

    array = np.array([[t] for t in texts], dtype=np.object_)
    text = aioclient.InferInput("text", list(array.shape), "BYTES")
    text.set_data_from_numpy(array)
    return [text]


OUTPUT_NAMES = ("label", "probabilities")


def check_answer(result, count: int) -> None:
    labels, probabilities = result.as_numpy("label"), result.as_numpy("probabilities")
    if labels is None or probabilities is None or labels.shape != (count, 1) or probabilities.shape[0] != count:
        raise ValueError(f"bad answer: label {None if labels is None else labels.shape}, probabilities "
                         f"{None if probabilities is None else probabilities.shape} for {count} text(s)")
    if not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("bad answer: probabilities do not sum to 1")


async def send(client, server: Server, next_texts: Callable[[], list[bytes]], *, clients: int,
               count: int | None = None, until: float | None = None, outcome: Outcome | None = None) -> Outcome:
    """Keep ``clients`` requests in flight until ``count`` requests were sent or the clock passes ``until``."""
    import tritonclient.http.aio as aioclient

    outcome = outcome if outcome is not None else Outcome()
    outputs = [aioclient.InferRequestedOutput(name, binary_data=True) for name in OUTPUT_NAMES]
    sent = 0

    async def client_loop() -> None:
        nonlocal sent
        while (sent < count) if count is not None else (time.perf_counter() < until):
            sent += 1
            texts = next_texts()
            inputs = make_request(texts)
            start = time.perf_counter()
            try:
                check_answer(await client.infer(TEXT_MODEL, inputs, outputs=outputs), len(texts))
                outcome.latencies.append(time.perf_counter() - start)
            except Exception as exc:  # every failure counts, whatever raised it
                outcome.failures.append(f"{type(exc).__name__}: {exc}"[:300])
            server.served += 1

    await asyncio.gather(*(client_loop() for _ in range(clients)))
    return outcome


class Sampler:
    """Every ``every`` seconds, the tree usage of the server under load, with its request count."""

    def __init__(self, every: float):
        self.every, self.active, self.samples = every, None, {}
        self.t0 = time.perf_counter()

    def record(self, server: Server, phase: str) -> dict:
        sample = {"t": round(time.perf_counter() - self.t0, 2), "requests": server.served, "phase": phase,
                  **server.usage()}
        self.samples.setdefault(server.label, []).append(sample)
        return sample

    async def run(self) -> None:
        while True:
            if self.active is not None:
                self.record(self.active, "load")
            await asyncio.sleep(self.every)


def slope_per_1000(samples: list[dict]) -> dict:
    """Least-squares RSS slope (MiB per 1,000 requests) over ``samples``, and its standard error."""
    x = np.array([s["requests"] for s in samples], dtype=float)
    y = np.array([s["rss_mib"] for s in samples], dtype=float)
    if len(x) < 3 or np.ptp(x) == 0:
        return {"slope": None, "stderr": None, "samples": len(x)}
    slope, intercept = np.polyfit(x, y, 1)
    residuals = y - (slope * x + intercept)
    stderr = np.sqrt(residuals @ residuals / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
    return {"slope": round(float(slope) * 1000, 3), "stderr": round(float(stderr) * 1000, 3), "samples": len(x)}


def latency_stats(outcome: Outcome) -> dict:
    ms = np.array(outcome.latencies) * 1000
    pct = (lambda q: round(float(np.percentile(ms, q)), 1)) if len(ms) else (lambda q: None)
    return {"requests": outcome.requests, "failed": len(outcome.failures),
            "seconds": round(outcome.seconds, 1),
            "rps": round(len(outcome.latencies) / outcome.seconds, 2) if outcome.seconds else None,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "rps_per_round": outcome.slice_rps,
            "first_failures": outcome.failures[:5]}


def memory_summary(samples: list[dict]) -> dict:
    """Start (ready, no request yet), after warm-up, end (after the last timed request, client connections still
    open) and after the client closed its connections; the slope over after-warm-up .. end."""
    phase = {s["phase"]: s for s in samples if s["phase"] != "load"}
    warm = samples.index(phase["after-warmup"])
    fitted = [s for s in samples[warm:] if s["phase"] != "closed"]
    fit = slope_per_1000(fitted)
    return {"rss_mib_start": phase["start"]["rss_mib"], "rss_mib_after_warmup": phase["after-warmup"]["rss_mib"],
            "rss_mib_end": phase["end"]["rss_mib"], "rss_mib_max": max(s["rss_mib"] for s in samples),
            "rss_slope_mib_per_1000_requests": fit["slope"], "rss_slope_stderr": fit["stderr"],
            "rss_fit_samples": fit["samples"], "rss_fit_requests": fitted[-1]["requests"] - fitted[0]["requests"],
            **{f"open_fds_{name.replace('-', '_')}": phase[name]["open_fds"]
               for name in ("start", "after-warmup", "end", "closed")},
            "processes": phase["end"]["processes"]}


def flatness(slope: float | None, stderr: float | None, threshold: float) -> str:
    """met: slope <= threshold; not shown: above it but within 2 standard errors of 0 (no growth detected, but the
    run is too short to bound it); missed: above it and more than 2 standard errors above 0."""
    if slope is None:
        return "not shown"
    if slope <= threshold:
        return "met"
    return "not shown" if slope <= 2 * (stderr or 0.0) else "missed"


# --- texts ---------------------------------------------------------------------------------------------------------


def held_out_texts(dataset: str) -> list[str]:
    """The eval split of a data set ``adaret train --data`` reads (seed 0): texts the exports were not trained on."""
    from adaret.training.data import load_splits

    return load_splits(dataset, seed=0).eval.texts


def describe_texts(dataset: str, texts: list[str]) -> dict:
    words = [len(t.split()) for t in texts]
    return {"dataset": dataset, "texts": len(texts), "words_min": min(words), "words_median": int(np.median(words)),
            "words_max": max(words)}


def article_stream(texts: list[str], seed: int) -> Callable[[], list[bytes]]:
    """Whole articles, one a request, in one shuffled order that every configuration replays from the start."""
    order = [texts[i].encode("utf-8") for i in np.random.default_rng(seed).permutation(len(texts))]
    position = 0

    def next_texts() -> list[bytes]:
        nonlocal position
        position += 1
        return [order[(position - 1) % len(order)]]

    return next_texts


def cut_stream(texts: list[str], seed: int) -> Callable[[], list[bytes]]:
    """1-4 texts a request, each an article cut to a random number of words (benchmarks/soak.py's requests)."""
    rng, words = np.random.default_rng(seed), [t.split() for t in texts]

    def next_texts() -> list[bytes]:
        chosen = [words[int(rng.integers(len(words)))] for _ in range(int(rng.integers(1, 5)))]
        return [" ".join(w[: int(rng.integers(1, len(w) + 1))]).encode("utf-8") for w in chosen]

    return next_texts


# --- exports -------------------------------------------------------------------------------------------------------


def export(budget: float, work: Path) -> tuple[str, float]:
    out = work / f"export-b{budget}"
    started = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "export.py"), "--budget", str(budget), "--out", str(out)],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return str(out), round(time.perf_counter() - started, 1)


def exports(args: argparse.Namespace, work: Path, budgets: tuple[float, ...]) -> tuple[dict, dict]:
    given = {0.4: args.export_04, 1.0: args.export_10}
    paths, seconds = {}, {}
    for budget in budgets:
        if given[budget]:
            paths[budget] = given[budget]
        else:
            print(f"exporting budget {budget} ...", flush=True)
            paths[budget], seconds[budget] = export(budget, work)
    return paths, seconds


# --- the two modes -------------------------------------------------------------------------------------------------


CONFIGS = (("b0.4 dynamic", 0.4, True), ("b0.4 no batching", 0.4, False), ("b1.0 dynamic", 1.0, True),
           ("b1.0 no batching", 1.0, False))


async def load_run(servers: list[Server], args: argparse.Namespace, texts: list[str]) -> tuple[dict, Sampler]:
    import tritonclient.http.aio as aioclient

    sampler = Sampler(args.sample_every)
    clients = {s.label: aioclient.InferenceServerClient(f"127.0.0.1:{s.port}", conn_limit=args.clients)
               for s in servers}
    streams = {s.label: article_stream(texts, args.seed) for s in servers}
    warm = {s.label: Outcome() for s in servers}
    timed = {s.label: Outcome() for s in servers}
    task = asyncio.create_task(sampler.run())
    try:
        for s in servers:
            sampler.record(s, "start")
        for s in servers:
            sampler.active = s
            await send(clients[s.label], s, streams[s.label], clients=args.clients, count=args.warmup,
                       outcome=warm[s.label])
            sampler.active = None
            sampler.record(s, "after-warmup")
        for round_index in range(args.rounds):
            shift = round_index % len(servers)
            for s in servers[shift:] + servers[:shift]:
                sampler.active = s
                await send(clients[s.label], s, streams[s.label], clients=args.clients, count=args.settle,
                           outcome=warm[s.label])
                counts = await model_counts(clients[s.label])
                started, answered = time.perf_counter(), len(timed[s.label].latencies)
                if args.requests:
                    await send(clients[s.label], s, streams[s.label], clients=args.clients,
                               count=args.requests // args.rounds, outcome=timed[s.label])
                else:
                    await send(clients[s.label], s, streams[s.label], clients=args.clients,
                               until=started + args.seconds / args.rounds, outcome=timed[s.label])
                elapsed = time.perf_counter() - started
                timed[s.label].count_batches(counts, await model_counts(clients[s.label]))
                timed[s.label].seconds += elapsed
                timed[s.label].slice_rps.append(round((len(timed[s.label].latencies) - answered) / elapsed, 3))
                sampler.active = None
                sampler.record(s, "load")
            print(f"round {round_index + 1}/{args.rounds}: "
                  + ", ".join(f"{label} {o.requests}" for label, o in timed.items()), flush=True)
        for s in servers:
            sampler.record(s, "end")
        await close_all(clients.values())
        for s in servers:
            sampler.record(s, "closed")
    finally:
        task.cancel()
        await close_all(clients.values())
    results = {}
    for s in servers:
        results[s.label] = {"budget": s.label.split()[0][1:], "dynamic_batching": s.dynamic,
                            **latency_stats(timed[s.label]),
                            "requests_per_execution": timed[s.label].requests_per_execution,
                            "untimed_requests": warm[s.label].requests, "untimed_failed": len(warm[s.label].failures),
                            **memory_summary(sampler.samples[s.label])}
    return results, sampler


async def close_all(clients) -> None:
    """Close the clients' connections (idempotent), then give the server a moment to close its side."""
    for client in clients:
        await client.close()
    await asyncio.sleep(1.0)


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def round_ratios(on: dict, off: dict) -> list[float]:
    return [round(a / b, 3) for a, b in zip(on["rps_per_round"], off["rps_per_round"], strict=True) if b]


def targets(results: dict, args: argparse.Namespace) -> dict:
    on04, off04, on10, off10 = (results[label] for label, _, _ in CONFIGS)
    total = sum(r["requests"] for r in results.values())
    failed = sum(r["failed"] + r["untimed_failed"] for r in results.values())
    speed, p95 = ratio(on04["rps"], on10["rps"]), ratio(on04["p95_ms"], on10["p95_ms"])
    batching = {"b0.4": ratio(on04["rps"], off04["rps"]), "b1.0": ratio(on10["rps"], off10["rps"])}
    # on/off in each round: the two slices ran minutes apart at most, so a round's ratio sees the same machine state
    per_round = {"b0.4": round_ratios(on04, off04), "b1.0": round_ratios(on10, off10)}
    flat = {label: flatness(r["rss_slope_mib_per_1000_requests"], r["rss_slope_stderr"], args.flat_mib_per_1000)
            for label, r in results.items()}
    overall = "missed" if "missed" in flat.values() else "met" if set(flat.values()) == {"met"} else "not shown"
    return {
        "timed_requests": total, "failed_requests": failed,
        "rps_ratio_b0.4_over_b1.0_dynamic": speed, "p95_ratio_b0.4_over_b1.0_dynamic": p95,
        "rps_ratio_dynamic_over_no_batching": batching, "rps_ratio_dynamic_over_no_batching_per_round": per_round,
        "met": {
            "no_failures_over_5000": total >= 5000 and failed == 0,
            "b0.4_2x_rps_of_b1.0_at_p95_no_worse": bool(speed and speed >= 2.0 and p95 is not None and p95 <= 1.0),
            "dynamic_beats_no_batching": all(v is not None and v > 1.0 for v in batching.values()),
        },
        "rss_flat_after_warmup": overall, "rss_flat_per_configuration": flat,
    }


async def soak_run(server: Server, args: argparse.Namespace, texts: list[str]) -> tuple[dict, Sampler]:
    import tritonclient.http.aio as aioclient

    sampler = Sampler(args.sample_every)
    client = aioclient.InferenceServerClient(f"127.0.0.1:{server.port}", conn_limit=args.clients)
    stream = cut_stream(texts, args.seed)
    counted = [0]

    def counting() -> list[bytes]:
        chosen = stream()
        counted[0] += len(chosen)
        return chosen

    task = asyncio.create_task(sampler.run())
    try:
        sampler.record(server, "start")
        warm = await send(client, server, stream, clients=args.clients, count=args.warmup)
        sampler.record(server, "after-warmup")
        sampler.active = server
        started = time.perf_counter()
        timed = await send(client, server, counting, clients=args.clients, count=args.soak)
        timed.seconds = time.perf_counter() - started
        sampler.active = None
        sampler.record(server, "end")
        await close_all([client])
        sampler.record(server, "closed")
    finally:
        task.cancel()
        await close_all([client])
    samples = sampler.samples[server.label]
    warm_index = next(i for i, s in enumerate(samples) if s["phase"] == "after-warmup")
    after = samples[warm_index:]
    half = slope_per_1000(after[len(after) // 2:])
    result = {**latency_stats(timed), "texts": counted[0], "untimed_requests": warm.requests,
              "untimed_failed": len(warm.failures), **memory_summary(samples),
              "rss_slope_mib_per_1000_requests_second_half": half["slope"],
              "rss_slope_second_half_stderr": half["stderr"]}
    return result, sampler


def settings(args: argparse.Namespace) -> dict:
    return {"clients": args.clients, "max_batch": args.max_batch, "max_queue_delay_us": args.max_queue_delay_us,
            "max_batch_tokens": args.max_batch_tokens,
            "instances_per_model": args.instances, "ort_threads_per_instance": args.threads, "ort_memory": args.memory,
            "warmup_requests": args.warmup, "settle_requests": args.settle, "sample_every_s": args.sample_every,
            "seed": args.seed}


def shown_command() -> str:
    """The command line, with any absolute path replaced by a placeholder (no machine paths in results)."""
    shown = ["DIR" if os.path.isabs(a) else a for a in sys.argv[1:]]
    return " ".join(["python benchmarks/serve_load.py", *shown])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--seconds", type=float, default=120.0,
                       help="timed seconds per configuration, split over the rounds (default: %(default)s)")
    bound.add_argument("--requests", type=int, default=None,
                       help="timed requests per configuration instead of --seconds, split over the rounds")
    bound.add_argument("--soak", type=int, default=None, metavar="N",
                       help="soak mode: N requests of 1-4 texts to one server (dynamic batching)")
    parser.add_argument("--soak-budget", type=float, default=0.4, choices=(0.4, 1.0),
                        help="soak mode: the export the server runs (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=16, help="requests in flight (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=200,
                        help="untimed requests per server before anything is timed (default: %(default)s)")
    parser.add_argument("--settle", type=int, default=16,
                        help="untimed requests before each timed slice (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=16, help="adaret serve --max-batch (default: %(default)s)")
    parser.add_argument("--max-queue-delay-us", type=int, default=1000,
                        help="adaret serve --max-queue-delay-us with dynamic batching (default: %(default)s)")
    parser.add_argument("--max-batch-tokens", type=int, default=DEFAULT_MAX_BATCH_TOKENS,
                        help="adaret serve --max-batch-tokens, every configuration (default: %(default)s)")
    parser.add_argument("--instances", type=int, default=2,
                        help="adaret serve --instances: model instances per model (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1,
                        help="ONNX Runtime intra-op threads per instance (default: %(default)s)")
    parser.add_argument("--memory", default=SERVE_MEMORY_MODE, choices=MEMORY_MODES,
                        help="adaret serve --memory: ONNX Runtime CPU allocator of every instance (default: "
                             "%(default)s, as adaret serve)")
    parser.add_argument("--dataset", default="bbc-news",
                        help="the held-out texts the clients send, any name `adaret train --data` takes (default: "
                             "%(default)s; rotten-tomatoes: short texts)")
    parser.add_argument("--export-04", default=None, metavar="DIR", help="the 0.4 export (default: export it)")
    parser.add_argument("--export-10", default=None, metavar="DIR", help="the 1.0 export (default: export it)")
    parser.add_argument("--sample-every", type=float, default=0.5, help="RSS sample period, s (default: %(default)s)")
    parser.add_argument("--flat-mib-per-1000", type=float, default=1.0,
                        help="the RSS slope (MiB per 1,000 requests) up to which RSS counts as flat (default: "
                             "%(default)s)")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds for a server to become ready")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="results name (default: serve_load, or serve_soak with --soak)")
    parser.add_argument("--results-dir", default=None, help="write the results here instead of benchmarks/results")
    args = parser.parse_args()
    if args.results_dir:
        common.RESULTS = Path(args.results_dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop every server
    texts = held_out_texts(args.dataset)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="adaret-serve-load-") as work_dir:
        work = Path(work_dir)
        if args.soak:
            budget = args.soak_budget
            paths, export_seconds = exports(args, work, (budget,))
            server = Server(f"b{budget} dynamic", paths[budget], True, args, work / "server.log")
            with running([server]):
                result, sampler = asyncio.run(soak_run(server, args, texts))
            payload = {"command": shown_command(), "machine": machine(), "settings": settings(args),
                       "texts": describe_texts(args.dataset, texts), "soak_requests": args.soak, "budget": budget,
                       "export_seconds": export_seconds, "result": result,
                       "wall_seconds": round(time.perf_counter() - started, 1),
                       "rss_flat_after_warmup": flatness(result["rss_slope_mib_per_1000_requests"],
                                                         result["rss_slope_stderr"], args.flat_mib_per_1000),
                       "flat_threshold_mib_per_1000": args.flat_mib_per_1000, "samples": sampler.samples[server.label]}
            write_results(args.name or "serve_soak", payload, render_soak(payload))
            return
        paths, export_seconds = exports(args, work, (0.4, 1.0))
        servers = [Server(label, paths[budget], dynamic, args, work / f"server-{i}.log")
                   for i, (label, budget, dynamic) in enumerate(CONFIGS)]
        with running(servers):
            results, sampler = asyncio.run(load_run(servers, args, texts))
    payload = {"command": shown_command(), "machine": machine(), "settings": settings(args),
               "texts": describe_texts(args.dataset, texts),
               "bound": {"requests": args.requests} if args.requests else {"seconds": args.seconds},
               "rounds": args.rounds, "export_seconds": export_seconds, "configurations": results,
               "targets": targets(results, args), "flat_threshold_mib_per_1000": args.flat_mib_per_1000,
               "wall_seconds": round(time.perf_counter() - started, 1), "samples": sampler.samples}
    write_results(args.name or "serve_load", payload, render_load(payload))


# --- markdown ------------------------------------------------------------------------------------------------------


def _setup(p: dict) -> str:
    s = p["settings"]
    batching = f"dynamic batching: max_queue_delay {s['max_queue_delay_us']} us"
    if s.get("max_batch_tokens") is not None:
        batching += f", Session runs of at most {s['max_batch_tokens'] or 'any number of'} padded tokens"
    return (f"Machine: {describe(p['machine'])}; onnxruntime {p['machine']['onnxruntime']}. Server: `adaret serve` "
            f"(bundled Triton, Python backend), max batch {s['max_batch']}, {batching} (or none), "
            f"{s['instances_per_model']} instance(s) per model x {s['ort_threads_per_instance']} ONNX Runtime "
            f"intra-op thread(s) each, CPU allocator {s.get('ort_memory', 'no-arena')}. Client: one process, "
            f"{s['clients']} requests in flight (asyncio, tritonclient "
            f"aio HTTP), on the same machine. {s['warmup_requests']} untimed warm-up requests per server.")


def _texts(p: dict, what: str) -> str:
    """The texts the clients sent; results recorded before --dataset were BBC News articles."""
    t = p.get("texts") or {"dataset": "bbc-news", "words_min": 120, "words_max": 3482}
    name = {"bbc-news": "BBC News", "rotten-tomatoes": "Rotten Tomatoes"}.get(t["dataset"], t["dataset"])
    median = f", median {t['words_median']}" if "words_median" in t else ""
    return f"held-out {name} {what} ({t['words_min']}-{t['words_max']} words{median})"


def _fmt(value, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value}{suffix}"


def _slope(r: dict, key: str = "rss_slope_mib_per_1000_requests", err: str = "rss_slope_stderr") -> str:
    return "n/a" if r[key] is None else f"{r[key]:+.2f} ± {r[err]:.2f}"


FLATNESS = ("RSS flat: met where the slope is at most the threshold; not shown where it is above but within two "
            "standard errors of 0 (no growth detected, but too few requests to bound it); missed otherwise.")


def _round_spread(t: dict) -> str:
    rounds = t.get("rps_ratio_dynamic_over_no_batching_per_round")
    if not rounds:
        return ""
    return " (per round: " + "; ".join(f"{label} {min(r):.2f}-{max(r):.2f}" for label, r in rounds.items() if r) + ")"


def render_load(p: dict) -> str:
    t = p["targets"]
    bound = (f"{p['bound']['requests']} timed requests" if "requests" in p["bound"]
             else f"{p['bound']['seconds']:g} timed seconds")
    lines = ["# `adaret serve` under load: retained 0.4 vs full 1.0, dynamic batching on and off", "",
             f"`{p['command']}`", "", _setup(p), "",
             f"Each configuration: {bound} in {p['rounds']} interleaved rounds (order rotated each round, "
             f"{p['settings']['settle_requests']} untimed settle requests before each slice). Each request: one "
             f"{_texts(p, 'text')}; the model reads at most 512 tokens. Requests per execution: Triton's inference "
             "count over its execution count in the timed slices, the mean batch the dynamic batcher formed. "
             "Latency: send to answer, in ms. RSS: tritonserver plus its Python-backend stubs (MiB); slope: least "
             "squares over the samples after warm-up, in MiB per 1,000 requests (± standard error). Open file "
             "descriptors of that tree: ready (no request yet), after warm-up and at the end (the client's "
             "connections open), and after the client closed its connections.", "",
             "| configuration | requests | failed | req/s | requests per execution | p50 | p95 | p99 | "
             "RSS start / after warm-up / end | RSS slope | open fds start / after warm-up / end / clients closed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in p["configurations"].items():
        lines.append(f"| {label} | {r['requests']} | {r['failed'] + r['untimed_failed']} | {_fmt(r['rps'])} | "
                     f"{_fmt(r.get('requests_per_execution'))} | "
                     f"{_fmt(r['p50_ms'])} | {_fmt(r['p95_ms'])} | {_fmt(r['p99_ms'])} | {r['rss_mib_start']:.0f} / "
                     f"{r['rss_mib_after_warmup']:.0f} / {r['rss_mib_end']:.0f} | {_slope(r)} | "
                     f"{r['open_fds_start']} / {r['open_fds_after_warmup']} / {r['open_fds_end']} / "
                     f"{r['open_fds_closed']} |")
    met = t["met"]
    verdict = {True: "met", False: "missed"}
    batching = t["rps_ratio_dynamic_over_no_batching"]
    lines += ["", "Failed counts every request, untimed ones included.", "", "| target | measured | |",
              "| --- | --- | --- |",
              f"| 0 failed over at least 5,000 requests | {t['failed_requests']} failed, {t['timed_requests']} timed "
              f"requests | {verdict[met['no_failures_over_5000']]} |",
              f"| 0.4 at least 2.0x the req/s of 1.0 (dynamic batching) at a p95 no worse | "
              f"{_fmt(t['rps_ratio_b0.4_over_b1.0_dynamic'], 'x')} req/s, p95 ratio "
              f"{_fmt(t['p95_ratio_b0.4_over_b1.0_dynamic'])} | "
              f"{verdict[met['b0.4_2x_rps_of_b1.0_at_p95_no_worse']]} |",
              f"| dynamic batching beats none at {p['settings']['clients']} clients | req/s on/off: 0.4 "
              f"{_fmt(batching['b0.4'], 'x')}, 1.0 {_fmt(batching['b1.0'], 'x')}{_round_spread(t)} | "
              f"{verdict[met['dynamic_beats_no_batching']]} |",
              f"| RSS flat after warm-up (slope at most {p['flat_threshold_mib_per_1000']} MiB per 1,000 requests) | "
              + ", ".join(f"{label} {_slope(r)} ({t['rss_flat_per_configuration'][label]})"
                          for label, r in p["configurations"].items())
              + f" | {t['rss_flat_after_warmup']} |", "", FLATNESS, ""]
    failures = {label: r["first_failures"] for label, r in p["configurations"].items() if r["first_failures"]}
    for label, messages in failures.items():
        lines += [f"First failures, {label}:", "", *[f"- `{m}`" for m in messages], ""]
    if p["export_seconds"]:
        lines += ["Export (with parity check) seconds: "
                  + ", ".join(f"{b}: {s}" for b, s in p["export_seconds"].items()) + ".", ""]
    lines += [f"Whole run: {p['wall_seconds']} s.", ""]
    return "\n".join(lines)


def render_soak(p: dict) -> str:
    r = p["result"]
    lines = ["# Soak: `adaret serve` under mixed-length requests", "", f"`{p['command']}`", "", _setup(p), "",
             f"{p['soak_requests']} requests of 1-4 texts ({r['texts']} texts: {_texts(p, 'texts')} cut to a "
             f"random length, 1 word up to the whole text) to the {p.get('budget', 0.4)} export with dynamic batching, "
             f"in "
             f"{r['seconds']} s ({_fmt(r['rps'])} req/s; latency p50 {_fmt(r['p50_ms'])}, p95 {_fmt(r['p95_ms'])}, "
             f"p99 {_fmt(r['p99_ms'])} ms). RSS: tritonserver plus its Python-backend stubs ({r['processes']} "
             "processes).", "",
             "| failed | RSS start / after warm-up / end / max | RSS slope after warm-up | RSS slope, second half | "
             "open fds start / after warm-up / end / client closed |", "| --- | --- | --- | --- | --- |",
             f"| {r['failed'] + r['untimed_failed']} | {r['rss_mib_start']:.0f} / {r['rss_mib_after_warmup']:.0f} / "
             f"{r['rss_mib_end']:.0f} / {r['rss_mib_max']:.0f} MiB | {_slope(r)} MiB per 1000 requests | "
             f"{_slope(r, 'rss_slope_mib_per_1000_requests_second_half', 'rss_slope_second_half_stderr')} MiB per "
             f"1000 requests | {r['open_fds_start']} / {r['open_fds_after_warmup']} / {r['open_fds_end']} / "
             f"{r['open_fds_closed']} |", "",
             f"RSS flat after warm-up (slope at most {p['flat_threshold_mib_per_1000']} MiB per 1,000 requests): "
             f"{p['rss_flat_after_warmup']}. Slopes are least squares over the samples (every "
             f"{p['settings']['sample_every_s']} s) against the request count, ± standard error. {FLATNESS}", ""]
    if r["first_failures"]:
        lines += ["First failures:", "", *[f"- `{m}`" for m in r["first_failures"]], ""]
    lines += [f"Whole run: {p['wall_seconds']} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
