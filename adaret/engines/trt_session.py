"""Run a TensorRT plan: sidecar check, deserialise, ``execute_async_v3`` with tensor addresses set by name.

Device buffers and the stream come from Polygraphy's CUDA helpers (``polygraphy.cuda``: ctypes over the CUDA
runtime). They need neither torch nor cuda-python, and Polygraphy is already in the ``gpu`` extra for the
comparison. cuda-python is used only where Polygraphy has no wrapper: CUDA-graph capture and event timing in
``benchmark``; without it, timing falls back to host timing without graphs, and says so. Nothing heavy is
imported at module import: the edge runtime imports this module without torch, onnx or TensorRT.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaret.engines.environment import cuda_runtime, current_gpu, import_tensorrt
from adaret.engines.profiles import Profile
from adaret.engines.sidecar import EngineSidecar, check_compatible, check_plan_matches, load_sidecar
from adaret.errors import AdaretError


@dataclass(frozen=True)
class BenchmarkResult:
    median_ms: float
    p90_ms: float
    iterations: int
    cuda_graph: bool
    timing: str  # "cuda-events" or "host"

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "iterations": self.iterations,
                "cuda_graph": self.cuda_graph, "timing": self.timing}


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


class TrtPlanRunner:
    """A deserialised plan with one execution context; ``run`` maps feeds to outputs by tensor name."""

    def __init__(self, plan_path: str | Path, *, device: int = 0):
        self.plan_path = Path(plan_path)
        self.sidecar: EngineSidecar = load_sidecar(self.plan_path)
        plan_bytes = self.plan_path.read_bytes()
        check_plan_matches(self.sidecar, plan_bytes, self.plan_path.name)
        self._trt = trt = import_tensorrt()
        gpu = current_gpu(device)
        check_compatible(self.sidecar, tensorrt_version=trt.__version__, gpu_name=gpu.name,
                         compute_capability=gpu.compute_capability)
        from polygraphy import cuda  # lazy: ctypes over the CUDA runtime, no torch

        self._cuda = cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(plan_bytes)
        if self.engine is None:
            raise AdaretError(f"TensorRT could not deserialize {self.plan_path.name} (see the TensorRT log)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._stream = cuda.Stream()
        self._buffers: dict[str, Any] = {}

    def _dtype(self, name: str) -> np.dtype:
        try:
            return np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))
        except TypeError:
            raise AdaretError(f"tensor {name} has type {self.engine.get_tensor_dtype(name)}, which has no NumPy "
                              f"equivalent; rebuild with float32 I/O (AutoCast keep_io_types)") from None

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> Any:
        from polygraphy.datatype import DataType

        buffer = self._buffers.get(name)
        if buffer is None:
            buffer = self._buffers[name] = self._cuda.DeviceArray(shape=shape, dtype=DataType.from_dtype(dtype))
        return buffer.resize(shape)

    def bind(self, feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Copy inputs to the device, set shapes and addresses; returns each output's shape and dtype."""
        validate_feeds(self.input_names, self.sidecar.profiles[0], feeds)
        for name in self.input_names:
            host = np.ascontiguousarray(feeds[name], dtype=self._dtype(name))
            self.context.set_input_shape(name, host.shape)
            buffer = self._buffer(name, host.shape, host.dtype)
            buffer.copy_from(host, stream=self._stream)
            self.context.set_tensor_address(name, buffer.ptr)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise AdaretError(f"output {name} has a data-dependent shape {shape}; adaret plans must not")
            buffer = self._buffer(name, shape, self._dtype(name))
            self.context.set_tensor_address(name, buffer.ptr)
            outputs[name] = (shape, self._dtype(name))
        return outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.bind(feeds)
        if not self.context.execute_async_v3(self._stream.ptr):
            raise AdaretError(f"TensorRT failed to run {self.plan_path.name} (see the TensorRT log)")
        results = {name: np.empty(shape, dtype=dtype) for name, (shape, dtype) in outputs.items()}
        for name, host in results.items():
            self._buffers[name].copy_to(host, stream=self._stream)
        self._stream.synchronize()
        return results

    def benchmark(self, feeds: Mapping[str, np.ndarray], *, iterations: int = 200, warmup: int = 20,
                  cuda_graph: bool = True) -> BenchmarkResult:
        """Median device time of one inference; inputs stay on the device (copies are not timed)."""
        self.run(feeds)  # binds buffers and runs once: TensorRT's own setup must not land in a CUDA graph
        cudart = cuda_runtime()
        stream = self._stream.ptr

        def enqueue() -> object:
            return self.context.execute_async_v3(stream)

        graph = _capture(cudart, stream, enqueue) if cuda_graph and cudart is not None else None

        def replay() -> object:
            return _check(cudart.cudaGraphLaunch(graph, stream))

        launch = enqueue if graph is None else replay
        for _ in range(warmup):
            launch()
        self._stream.synchronize()
        samples = _event_times(cudart, stream, launch, iterations) if cudart is not None else \
            _host_times(self._stream, launch, iterations)
        ordered = sorted(samples)
        return BenchmarkResult(round(statistics.median(ordered), 4), round(ordered[int(0.9 * (len(ordered) - 1))], 4),
                               iterations, graph is not None, "cuda-events" if cudart is not None else "host")

    def device_memory_bytes(self) -> int:
        """Activation memory of this context's profile (profile 0)."""
        return device_memory_per_profile(self.engine)[0]

    def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.free()
        self._buffers.clear()
        self._stream.free()

    def __enter__(self) -> TrtPlanRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


def _capture(cudart: Any, stream: int, launch: Callable[[], object]) -> Any:
    _check(cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
    launch()
    graph = _check(cudart.cudaStreamEndCapture(stream))
    return _check(cudart.cudaGraphInstantiate(graph, 0))


def _event_times(cudart: Any, stream: int, launch: Callable[[], object], iterations: int) -> list[float]:
    start, end = _check(cudart.cudaEventCreate()), _check(cudart.cudaEventCreate())
    samples = []
    for _ in range(iterations):
        _check(cudart.cudaEventRecord(start, stream))
        launch()
        _check(cudart.cudaEventRecord(end, stream))
        _check(cudart.cudaEventSynchronize(end))
        samples.append(float(_check(cudart.cudaEventElapsedTime(start, end))))
    return samples


def _host_times(stream: Any, launch: Callable[[], object], iterations: int) -> list[float]:
    samples = []
    for _ in range(iterations):
        began = time.perf_counter()
        launch()
        stream.synchronize()
        samples.append(1000 * (time.perf_counter() - began))
    return samples
