"""Run a TensorRT plan: a thin adapter over Polygraphy's ``TrtRunner(EngineFromBytes(...))``.

``plan_runner`` is the one way to a plan, shared by ``adaret compare`` and the runtime: it refuses a plan whose
sidecar describes another build, another TensorRT release or another GPU, then hands the checked bytes to
Polygraphy. ``TrtPlanRunner`` adds what ``adaret.runtime`` expects (the sidecar, input and output names,
``run``): feeds are checked against the plan's profile before TensorRT sees them, and outputs are copied, since
Polygraphy reuses its host buffers. Nothing heavy is imported at module import: the edge runtime imports this
module without torch, onnx, Polygraphy or TensorRT.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaret.core.errors import AdaretError
from adaret.engines.environment import cuda_runtime, current_gpu, import_tensorrt
from adaret.engines.profiles import Profile
from adaret.engines.sidecar import EngineSidecar, check_compatible, check_plan_matches, load_sidecar


@dataclass(frozen=True)
class BenchmarkResult:
    median_ms: float
    p90_ms: float
    iterations: int
    timing: str  # "cuda-events" or "host"

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "iterations": self.iterations,
                "timing": self.timing}


def polygraphy_call(func: Callable[..., Any], what: str, *args: Any, **kwargs: Any) -> Any:
    """Call into Polygraphy; its errors (``G_LOGGER.critical``) become one-line AdaretErrors."""
    from polygraphy.exception import PolygraphyException

    try:
        return func(*args, **kwargs)
    except PolygraphyException as exc:
        lines = str(exc).strip().splitlines()
        raise AdaretError(f"{what}: {lines[0] if lines else type(exc).__name__} (see the TensorRT log above)") \
            from None


def validate_feeds(input_names: list[str], profile: Profile, feeds: Mapping[str, np.ndarray]) -> None:
    """One clear error for a missing input or a shape outside the plan's profile (before TensorRT sees it)."""
    missing = [name for name in input_names if name not in feeds]
    if missing:
        raise AdaretError(f"missing input(s) {', '.join(missing)}; the plan takes {', '.join(input_names)}")
    for name in input_names:
        shape = tuple(np.shape(feeds[name]))
        shapes = profile.inputs.get(name)
        if shapes is None:
            continue
        inside = len(shape) == len(shapes.min) and all(lo <= d <= hi for d, lo, hi in zip(shape, shapes.min,
                                                                                            shapes.max, strict=True))
        if not inside:
            raise AdaretError(f"input {name} has shape {shape}, outside the plan's profile "
                              f"{shapes.min}..{shapes.max} (bucket {profile.seq_len}: pad or batch to fit)")


def plan_runner(plan_path: str | Path, sidecar: EngineSidecar | None = None, *,
                device: int = 0) -> tuple[EngineSidecar, Any]:
    """The sidecar and a Polygraphy ``TrtRunner`` (not yet active) for a plan this machine can run."""
    plan_path = Path(plan_path)
    sidecar = sidecar if sidecar is not None else load_sidecar(plan_path)
    plan_bytes = plan_path.read_bytes()
    check_plan_matches(sidecar, plan_bytes, plan_path.name)
    trt = import_tensorrt()
    gpu = current_gpu(device)
    check_compatible(sidecar, tensorrt_version=trt.__version__, gpu_name=gpu.name,
                     compute_capability=gpu.compute_capability)
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    # the bytes that were checked are the bytes deserialised: no second read of a file that may change
    return sidecar, TrtRunner(EngineFromBytes(plan_bytes), name=f"tensorrt:{plan_path.name}")


class TrtPlanRunner:
    """An active Polygraphy runner for one plan; ``run`` maps feeds to outputs by tensor name."""

    def __init__(self, plan_path: str | Path, *, device: int = 0):
        self.plan_path = Path(plan_path)
        self.sidecar, self._runner = plan_runner(self.plan_path, device=device)
        polygraphy_call(self._runner.activate, f"TensorRT could not load {self.plan_path.name}")
        metadata = self._runner.get_input_metadata(use_numpy_dtypes=False)
        self.input_names = list(metadata)
        self._input_dtypes = {name: _numpy_dtype(meta.dtype, name) for name, meta in metadata.items()}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.output_names = [name for name in names if name not in metadata]

    @property
    def engine(self) -> Any:
        return self._runner.engine  # owned by the runner, so that it outlives the context

    @property
    def context(self) -> Any:
        return self._runner.context

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        validate_feeds(self.input_names, self.sidecar.profiles[0], feeds)
        host = {name: np.ascontiguousarray(feeds[name], dtype=self._input_dtypes[name]) for name in self.input_names}
        # names, shapes and dtypes were checked above, with adaret's messages rather than Polygraphy's
        outputs = polygraphy_call(self._runner.infer, f"TensorRT failed to run {self.plan_path.name}", host,
                                  check_inputs=False)
        return {name: np.array(outputs[name], copy=True) for name in self.output_names}

    def benchmark(self, feeds: Mapping[str, np.ndarray], *, iterations: int = 200,
                  warmup: int = 20) -> BenchmarkResult:
        """Median time of one enqueue. The first run sets shapes, addresses and output buffers; the timed enqueues
        reuse them, so host<->device copies are not timed. CUDA events with cuda-python, else host timing."""
        self.run(feeds)
        stream, cudart = self._runner.stream, cuda_runtime()

        def launch() -> None:
            if not self.context.execute_async_v3(stream.ptr):
                raise AdaretError(f"TensorRT failed to run {self.plan_path.name} (see the TensorRT log)")

        for _ in range(warmup):
            launch()
        stream.synchronize()
        samples = _event_times(cudart, stream.ptr, launch, iterations) if cudart is not None else \
            _host_times(stream, launch, iterations)
        ordered = sorted(samples)
        return BenchmarkResult(round(statistics.median(ordered), 4), round(ordered[int(0.9 * (len(ordered) - 1))], 4),
                               iterations, "cuda-events" if cudart is not None else "host")

    def device_memory_bytes(self) -> int:
        """Activation memory of this context's profile (profile 0)."""
        return device_memory_per_profile(self.engine)[0]

    def close(self) -> None:
        if self._runner.is_active:
            self._runner.deactivate()

    def __enter__(self) -> TrtPlanRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # the runtime keeps one runner per session and never closes it; free the GPU memory when it goes
        with contextlib.suppress(Exception):
            self.close()


def _numpy_dtype(dtype: Any, name: str) -> np.dtype:
    from polygraphy.datatype import DataType
    from polygraphy.exception import PolygraphyException

    try:
        return np.dtype(DataType.to_dtype(DataType.from_dtype(dtype), "numpy"))
    except PolygraphyException:  # a type NumPy lacks (bf16, fp8)
        raise AdaretError(f"input {name} has type {dtype}, which has no NumPy equivalent; rebuild with "
                          f"integer ids (adaret export) and float32 I/O (AutoCast keep_io_types)") from None


def device_memory_per_profile(engine: Any) -> list[int]:
    """Activation (scratch) memory an execution context needs, per optimization profile: the ``_v2`` getters
    (TensorRT >= 10.1, 64-bit), else their 10.0 predecessors."""
    count = engine.num_optimization_profiles
    for getter in ("get_device_memory_size_for_profile_v2", "get_device_memory_size_for_profile"):
        if hasattr(engine, getter):
            return [int(getattr(engine, getter)(i)) for i in range(count)]
    total = getattr(engine, "device_memory_size_v2", None)
    return [int(total if total is not None else engine.device_memory_size)] * count


def _check(result: Any) -> Any:
    err = result[0] if isinstance(result, tuple) else result
    if int(err) != 0:
        raise AdaretError(f"CUDA error {err}")
    return result[1] if isinstance(result, tuple) and len(result) > 1 else None


def _event_times(cudart: Any, stream: int, launch: Callable[[], object], iterations: int) -> list[float]:
    start, end = _check(cudart.cudaEventCreate()), _check(cudart.cudaEventCreate())
    samples = []
    try:
        for _ in range(iterations):
            _check(cudart.cudaEventRecord(start, stream))
            launch()
            _check(cudart.cudaEventRecord(end, stream))
            _check(cudart.cudaEventSynchronize(end))
            samples.append(float(_check(cudart.cudaEventElapsedTime(start, end))))
    finally:
        cudart.cudaEventDestroy(start)
        cudart.cudaEventDestroy(end)
    return samples


def _host_times(stream: Any, launch: Callable[[], object], iterations: int) -> list[float]:
    samples = []
    for _ in range(iterations):
        began = time.perf_counter()
        launch()
        stream.synchronize()
        samples.append(1000 * (time.perf_counter() - began))
    return samples
