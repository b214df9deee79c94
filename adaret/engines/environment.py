"""The machine's TensorRT and GPU, found without torch (cuda-python, else nvidia-smi)."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from types import ModuleType

from adaret.core.errors import AdaretError

INSTALL_HINT = "install it with the GPU extra (pip install 'adaret[gpu]') on a machine with an NVIDIA GPU"


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "major.minor"


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or a one-line AdaretError saying it is absent."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise AdaretError(f"tensorrt is not installed ({exc.msg}): {INSTALL_HINT}") from None


def current_gpu(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``."""
    found = _gpu_from_cuda_python(device)
    if found is None:
        gpus = _gpus_from_nvidia_smi()
        found = gpus[device] if len(gpus) > device else None
    if found is None:
        raise AdaretError(f"cannot identify CUDA device {device}: no cuda-python and no working nvidia-smi "
                          f"(pip install cuda-python)")
    return found


def _gpu_from_cuda_python(device: int) -> GpuInfo | None:
    cudart = cuda_runtime()
    if cudart is None:
        return None
    err, props = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        return None
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name.rstrip("\x00").strip(), f"{props.major}.{props.minor}")


def cuda_runtime() -> ModuleType | None:
    """cuda-python's runtime bindings: ``cuda.bindings.runtime`` (12.6+) or the older ``cuda.cudart``."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _gpus_from_nvidia_smi() -> list[GpuInfo]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        result = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(result.stdout) if result.returncode == 0 else []


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Rows of ``nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader``."""
    gpus = []
    for line in text.splitlines():
        name, _, cc = line.rpartition(",")
        name, cc = name.strip(), cc.strip()
        if name and cc.replace(".", "", 1).isdigit() and "." in cc:
            gpus.append(GpuInfo(name, cc))
    return gpus
