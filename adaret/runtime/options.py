"""ONNX Runtime session options and execution providers chosen for retained models.

The CPU arena is off by default. ONNX Runtime's arena keeps the chunks it reserves and serves later requests
from them, so the process peak follows the arena's high-water mark rather than what the graph holds at once.
Retained layers ask for smaller tensors than the first (full-length) layer, whose chunks the arena already
holds, so a retained graph then peaks almost as high as the full one. With the arena off, each tensor is an
ordinary allocation that goes back to the system when freed. The arena-off setting costs some latency; pass
``memory="arena"`` where latency matters more than memory. docs/results.md and docs/runtime.md have the
measurements of both.
"""

from __future__ import annotations

import onnxruntime as ort

# "no-arena" is the runtime's default; the others exist to measure against, for servers (`adaret serve` uses the
# arena) and for users who want them.
from adaret.core.constants import DEFAULT_MEMORY_MODE, MEMORY_MODES
from adaret.core.errors import AdaretError

# Most capable first; CPU always closes the list so unsupported nodes still have a home.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

_SAME_AS_REQUESTED = 1  # OrtArenaCfg arena_extend_strategy: 0 = kNextPowerOfTwo, 1 = kSameAsRequested
_env_allocator_registered = False


def select_providers(available: list[str] | None = None) -> list[str]:
    """The installed execution providers we use, in preference order (TensorRT, CUDA, CPU)."""
    available = ort.get_available_providers() if available is None else available
    chosen = [p for p in PROVIDER_PREFERENCE if p in available]
    return chosen if "CPUExecutionProvider" in chosen else [*chosen, "CPUExecutionProvider"]


def session_options(memory: str = DEFAULT_MEMORY_MODE, threads: int | None = None) -> ort.SessionOptions:
    """SessionOptions for a CPU deployment; ``memory`` is one of MEMORY_MODES, ``threads`` the intra-op threads."""
    if memory not in MEMORY_MODES:
        raise AdaretError(f"unknown memory mode {memory!r}: use one of {', '.join(MEMORY_MODES)}")
    options = ort.SessionOptions()
    # Errors reach the user as one AdaretError carrying ORT's message; ORT's own log would print them twice.
    options.log_severity_level = 4
    if threads:
        options.intra_op_num_threads = threads
    if memory == "no-arena":
        options.enable_cpu_mem_arena = False
    elif memory == "arena-same-as-requested":
        # The CPU arena's extend strategy is only settable on a shared (environment) allocator.
        _register_same_as_requested_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


def _register_same_as_requested_arena() -> None:
    global _env_allocator_registered
    if _env_allocator_registered:  # one per process; registering twice is an error in ONNX Runtime
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, _SAME_AS_REQUESTED, -1, -1))
    _env_allocator_registered = True
