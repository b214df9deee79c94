"""The Triton Inference Server that ``adaret serve`` runs: the ``tritonserver`` binary and Python backend that the
``nvidia-pytriton`` wheel bundles, run directly (pytriton's own Python API is not used: it needs numpy<2).

The Python-backend stub (the process that runs a model's ``model.py``) needs three things:

- **numpy<2.** The stub's pybind11 reads numpy's array descriptors with the numpy 1.x layout: under numpy 2 it
  gets item sizes wrong, so every output tensor is refused ("output tensor shape does not match size of output")
  and BYTES inputs decode to garbage (and crash the stub). The stub therefore runs its own small environment,
  ``STUB_ENV`` (numpy<2, onnxruntime, tokenizers, adaret without dependencies), which the Makefile creates; the
  rest of adaret keeps numpy 2. ``stub_environment`` finds it and checks its numpy.
- **That environment on PATH.** The stub embeds Python in isolated mode, so ``PYTHONPATH`` is ignored; it finds
  its prefix by looking up ``python3`` on ``PATH``. With the environment's ``bin`` first on ``PATH``, its
  ``pyvenv.cfg`` is found and its site-packages are used.
- **The matching libpython.** The stub links ``libpython3.X.so`` from the library path. Where the system's
  libpython is another build of the same version than the environment's standard library, the stub can fail in
  ``initialize`` (``'_thread.RLock' object has no attribute '_recursion_count'``). The interpreter's own
  ``LIBDIR`` goes first on ``LD_LIBRARY_PATH``.

One more setting is about memory, not correctness. The runtime allocates ONNX Runtime's tensors with plain malloc
(its arena is off), and in the stubs glibc kept the freed chunks of varied sizes spread over many malloc arenas:
over 5,000 mixed-length requests (benchmarks/serve_load.py --soak 5000) the server's resident set grew by 8 MiB
per 1,000 requests in the second half with no setting, and by 9 with ``MALLOC_ARENA_MAX=2`` alone. With
``MALLOC_ARENA_MAX=2`` and ``MALLOC_TRIM_THRESHOLD_=131072`` it stays flat (+0.5 +- 0.5 MiB per 1,000 after
warm-up, benchmarks/results/serve_soak.md; the two runs without are in docs/results.md, their files not kept).
The cost is speed: the trim threshold also fixes glibc's mmap threshold, so large tensors are mapped and unmapped
on every request (the soak ran at 21 requests/s against 29 with the arena limit alone). A value the user set is
kept.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from adaret.core.errors import AdaretError

INSTALL_HINT = "pip install 'adaret[serve]' and `pip install --no-deps nvidia-pytriton==0.7.0` (the Makefile does both)"
STUB_NAME = "triton_python_backend_stub"
# glibc malloc settings for the server and its stubs (module docstring: they keep the stubs' memory flat)
MALLOC_SETTINGS = {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "131072"}
# The stub's Python environment: an explicit --stub-env, else $ADARET_TRITON_PYTHON, else STUB_ENV inside the
# running environment (where the Makefile creates it).
STUB_ENV = "triton-python"
STUB_ENV_VARIABLE = "ADARET_TRITON_PYTHON"
STUB_ENV_HINT = ("create it with `make install`, or: python -m venv ENV && ENV/bin/pip install 'numpy<2' onnxruntime "
                 "tokenizers && ENV/bin/pip install --no-deps adaret")
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")


@dataclass(frozen=True)
class BundledServer:
    """Where the wheel keeps the server: ``<pytriton>/tritonserver/{bin, backends, python_backend_stubs}`` and the
    shared libraries auditwheel moved to ``<site-packages>/nvidia_pytriton.libs``."""

    root: Path

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    @property
    def libraries(self) -> Path:
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub(self, version: str | None = None) -> Path:
        """The Python-backend stub built for this interpreter's ``major.minor`` version."""
        version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / version / STUB_NAME


def find_bundled_server() -> BundledServer:
    """The bundled server, or a one-line error saying how to install it. pytriton itself is not imported."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise AdaretError(f"no Triton Inference Server found: the nvidia-pytriton wheel is not installed "
                          f"({INSTALL_HINT})")
    server = BundledServer(Path(next(iter(spec.submodule_search_locations))) / "tritonserver")
    if not server.binary.is_file():
        raise AdaretError(f"the nvidia-pytriton install has no tritonserver binary at {server.binary} "
                          f"(reinstall it: {INSTALL_HINT})")
    if not server.stub().is_file():
        raise AdaretError(f"the bundled Triton has no Python-backend stub for Python "
                          f"{sys.version_info.major}.{sys.version_info.minor} (it ships 3.8-3.13)")
    return server


def prepare_backends(server: BundledServer, directory: Path) -> Path:
    """A ``--backend-directory`` holding the Python backend with the stub for this interpreter.

    The backend loads the stub from its own directory, and the wheel keeps one stub per Python version elsewhere, so
    the backend is assembled here: links to the backend's files and a copy of the stub, as pytriton does. The copy's
    ``$ORIGIN``-relative library path no longer reaches the wheel's libraries, so ``server_environment`` lists them.
    """
    backend = directory / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for name in PYTHON_BACKEND_FILES:
        os.symlink(server.python_backend / name, backend / name)
    shutil.copy2(server.stub(), backend / STUB_NAME)
    return directory


def stub_environment(explicit: str | Path | None = None) -> Path:
    """The Python environment the stub runs (see the module docstring), checked: same Python version as the stub,
    numpy<2, and adaret, onnxruntime and tokenizers importable."""
    chosen = explicit or os.environ.get(STUB_ENV_VARIABLE) or Path(sys.prefix) / STUB_ENV
    env = Path(chosen)
    python = env / "bin" / "python3"
    if not python.is_file():
        raise AdaretError(f"no Python environment for Triton's Python backend at {env} ({STUB_ENV_HINT})")
    probe = ("import sys, numpy, onnxruntime, tokenizers, adaret.runtime; "
             "print(f'{sys.version_info[0]}.{sys.version_info[1]} {numpy.__version__}')")
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise AdaretError(f"the Python environment {env} for Triton's Python backend is incomplete "
                          f"({lines[-1] if lines else 'it does not start'}; {STUB_ENV_HINT})")
    version, numpy_version = result.stdout.split()
    ours = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version != ours:
        raise AdaretError(f"the Python environment {env} runs Python {version}, but the stub is chosen for this "
                          f"Python ({ours}); make it with this Python ({STUB_ENV_HINT})")
    if int(numpy_version.split(".")[0]) >= 2:
        raise AdaretError(f"the Python environment {env} has numpy {numpy_version}; the bundled Python-backend stub "
                          f"needs numpy<2 ({STUB_ENV_HINT})")
    return env


def server_environment(server: BundledServer, stub_env: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for ``tritonserver``: ``base`` (default: this process's) with ``stub_env``'s ``bin`` first on
    ``PATH``, this interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH``, and the wheel's shared libraries last."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(stub_env / "bin"), *_entries(env.get("PATH"))])
    libdir = sysconfig.get_config_var("LIBDIR")
    library_path = [*([libdir] if libdir else []), *_entries(env.get("LD_LIBRARY_PATH")), str(server.libraries)]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dict.fromkeys(library_path))  # first occurrence wins, order kept
    for name, value in MALLOC_SETTINGS.items():
        env.setdefault(name, value)
    return env


def _entries(value: str | None) -> list[str]:
    return [entry for entry in (value or "").split(os.pathsep) if entry]
