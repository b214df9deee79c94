"""Starting ``adaret serve`` for the serving tests (classification and question answering)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import pytest

from adaret.core.errors import AdaretError
from adaret.serving import bundled
from adaret.serving.server import Ports, wait_ready


def server_or_skip():
    """The bundled server and the stub's environment: installed by `make install`; missing is a failure under CI."""
    try:
        return bundled.find_bundled_server(), bundled.stub_environment()
    except AdaretError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no bundled Triton: {exc}")


@contextlib.contextmanager
def adaret_serve(export: Path, max_batch: int,
                 max_batch_tokens: int | None = None) -> Iterator[tuple[subprocess.Popen, object, int]]:
    """``adaret serve EXPORT`` on free ports, ready: (the process, an HTTP client, the metrics port).
    ``max_batch_tokens``: ``--max-batch-tokens`` (None: the default)."""
    import tritonclient.http as httpclient

    server_or_skip()
    http, grpc, metrics = astuple(Ports.free())
    command = [sys.executable, "-m", "adaret.cli", "serve", str(export), "--port", str(http),
               "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--max-batch", str(max_batch),
               "--max-queue-delay-us", "2000",
               *([] if max_batch_tokens is None else ["--max-batch-tokens", str(max_batch_tokens)])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    client = None
    try:
        if not wait_ready(process, http, timeout=90):
            process.kill()
            pytest.fail(f"adaret serve did not become ready:\n{process.communicate()[0][-3000:]}")
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}", concurrency=8)
        yield process, client, metrics
    finally:
        # Close the client's keep-alive connections first and stop the server as a user would: Triton otherwise
        # waits --exit-timeout-secs (30 s) for them, and a killed `adaret serve` leaves it doing so.
        if client is not None:
            client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
