"""One description of the machine and libraries behind every recorded result: validation reports, ``adaret bench``
and the benchmark scripts all write this.

ONNX Runtime's speed, INT8's above all, depends on the CPU's vector extensions: on a CPU with AVX2 but no VNNI the
int8 GEMMs gain far less than with AVX512-VNNI or AMX, so a speed number without the ISA it ran on cannot be
compared with another.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

ISA_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
             "amx_tile": "AMX", "amx_int8": "AMX-INT8"}
LIBRARIES = ("adaret", "torch", "transformers", "tokenizers", "onnx", "onnxruntime", "numpy", "tensorrt")


def machine() -> dict[str, Any]:
    """CPU model, core count, the ISA extensions that decide ONNX Runtime's kernels, the system and Python."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):  # not Linux: keep what platform knows
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first core's entry
    flags = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name") or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "isa": [name for flag, name in ISA_FLAGS.items() if flag in flags], "system": platform.system(),
            "python": platform.python_version()}


def describe(found: dict[str, Any]) -> str:
    """One line for a report: CPU, cores and the ISA extensions (older records without them say so)."""
    isa = ", ".join(found.get("isa") or []) or "ISA not recorded"
    return f"{found['cpu']}, {found['cores']} cores ({isa})"


def versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries a result depends on ("not installed" where absent)."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
