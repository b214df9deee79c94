"""Run the bundled ``tritonserver`` over a model repository, and ``adaret serve``'s whole life: write the served
repository into a temporary directory, start the server, forward SIGTERM/SIGINT to it (Triton then stops taking
requests, finishes those in flight and exits) and return its exit status."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from adaret.core.errors import AdaretError
from adaret.serving.bundled import (
    BundledServer,
    find_bundled_server,
    prepare_backends,
    server_environment,
    stub_environment,
)
from adaret.serving.configs import Batching
from adaret.serving.export_facts import read_export
from adaret.serving.repository import write_served_repository

FORWARDED = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls) -> Ports:
        """Three ports the system reports free now (for tests and benchmarks that start several servers); another
        process may still take one before the server binds it."""
        sockets = [socket.socket() for _ in range(3)]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in sockets))
        finally:
            for s in sockets:
                s.close()


def server_command(server: BundledServer, repository: Path, backends: Path, ports: Ports,
                   extra: Sequence[str] = ()) -> list[str]:
    return [str(server.binary), f"--model-repository={repository}", f"--backend-directory={backends}",
            f"--http-port={ports.http}", f"--grpc-port={ports.grpc}", f"--metrics-port={ports.metrics}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", *extra]


@contextlib.contextmanager
def backends_directory(server: BundledServer) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="adaret-triton-backends-") as directory:
        yield prepare_backends(server, Path(directory))


def start_server(repository: Path, backends: Path, ports: Ports, *, server: BundledServer | None = None,
                 stub_env: Path | None = None, extra: Sequence[str] = (), **popen: object) -> subprocess.Popen:
    """Start ``tritonserver`` on ``repository`` with the bundled Python backend (``backends``, from
    ``backends_directory``) running ``stub_env`` (default: ``stub_environment()``); ``extra`` adds server flags
    (``--model-control-mode=explicit``, ...)."""
    server = server or find_bundled_server()
    env = server_environment(server, stub_env or stub_environment())
    return subprocess.Popen(server_command(server, repository, backends, ports, extra), env=env,
                            **popen)  # type: ignore[call-overload]


def wait_ready(process: subprocess.Popen, port: int, timeout: float = 120.0) -> bool:
    """True once ``/v2/health/ready`` answers 200; False if the server exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def serve(export: str | Path, *, name: str, batching: Batching, ports: Ports, stub_env: str | Path | None = None,
          extra: Sequence[str] = ()) -> int:
    """``adaret serve``: run until SIGTERM or SIGINT, then return the server's exit status."""
    server = find_bundled_server()
    python_env = stub_environment(stub_env)
    facts = read_export(export)  # every refusal comes before the server starts
    with tempfile.TemporaryDirectory(prefix="adaret-serve-") as directory:
        repository = Path(directory) / "models"
        repository.mkdir()
        models = write_served_repository(facts, name, batching, repository)
        del facts  # the server's models load their own Sessions; this process needs none
        with backends_directory(server) as backends:
            # Its own session: a terminal's Ctrl-C reaches this process only, which forwards it once. It still dies
            # with this process (PR_SET_PDEATHSIG), so a killed `adaret serve` leaves no server behind.
            process = start_server(repository, backends, ports, server=server, stub_env=python_env, extra=extra,
                                   start_new_session=True, preexec_fn=_die_with_parent)
            with _forwarding_signals(process):
                threading.Thread(target=_announce, args=(process, models, ports), daemon=True).start()
                status = process.wait()  # Python resumes the wait after a signal handler ran (PEP 475)
    if status != 0:
        raise AdaretError(f"tritonserver exited with status {status} (its log above says why)")
    return 0


@contextlib.contextmanager
def _forwarding_signals(process: subprocess.Popen) -> Iterator[None]:
    """SIGTERM/SIGINT go to the server, whose own shutdown drains in-flight requests; this process waits for it."""
    def forward(signum: int, _frame: object) -> None:
        if process.poll() is None:
            process.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if process.poll() is None:  # this process is leaving for another reason: never leave the server behind
            process.kill()
            process.wait()


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _announce(process: subprocess.Popen, models: list[str], ports: Ports) -> None:
    if wait_ready(process, ports.http, timeout=600):
        print(f"adaret serve: ready: models {', '.join(models)}; HTTP :{ports.http}, gRPC :{ports.grpc}, "
              f"metrics :{ports.metrics}/metrics (SIGTERM or Ctrl-C stops after in-flight requests)",
              file=sys.stderr, flush=True)
