"""``adaret compare``: ONNX Runtime (the fp32 reference) against a TensorRT plan, or against another ONNX, with
Polygraphy's ``Comparator`` and tolerances that follow the plan's precision.

Kept positions (``kept_positions_l*`` outputs of ``--with-positions`` exports) must match exactly whatever the
precision: the engine keeps its score path in FP32 so that the same tokens survive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adaret.core import graph_facts as gf
from adaret.core.dummy_inputs import Vocabulary, dummy_inputs
from adaret.core.errors import AdaretError
from adaret.engines.sidecar import EngineSidecar, load_sidecar
from adaret.engines.trt_session import plan_runner, polygraphy_call

# (atol, rtol) on logits. TensorRT's fp32 (TF32 off, see decisions.py) still fuses and reorders reductions, so
# it gets 1e-3 rather than ONNX Runtime's 1e-4; fp16 keeps a 10-bit mantissa through 6+ layers of residual
# sums; bf16 has 7 bits; INT8 Q/DQ is bounded by the calibration, not by rounding.
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-3, 1e-3), "fp16": (2e-2, 2e-2), "bf16": (6e-2, 6e-2), "int8-qdq": (1.5e-1, 1e-1),
}
EXACT_PREFIX = "kept_positions"
DEFAULT_BATCH = 2


@dataclass
class CompareReport:
    reference: str
    candidate: str
    precision: str
    atol: float
    rtol: float
    batch: int
    seq_len: int
    iterations: int
    passed: bool
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    exact_match: dict[str, bool] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"{Path(self.candidate).name} vs {Path(self.reference).name} (ONNX Runtime, fp32): "
                 f"{self.iterations} batch(es) of {self.batch}x{self.seq_len}, precision {self.precision} "
                 f"(atol {self.atol:g}, rtol {self.rtol:g})"]
        lines += [f"  {name}: max |diff| {diff:.3e}" for name, diff in self.max_abs_diff.items()]
        lines += [f"  {name}: {'identical' if same else 'DIFFERENT'}" for name, same in self.exact_match.items()]
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def make_feeds(inputs: dict[str, str], batch: int, seq_len: int, vocab: Vocabulary, *, count: int = 3,
               seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` random batches of ``dummy_inputs`` (padded rows, at least one full), cast to each input's
    dtype. ``inputs`` maps name -> ONNX dtype name (INT64 or INT32)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        values = dummy_inputs(batch, seq_len, vocab, rng)
        feeds.append({name: values[name].astype(np.int32 if dtype == "INT32" else np.int64)
                      for name, dtype in inputs.items()})
    return feeds


def compare(reference: str | Path, candidate: str | Path, *, precision: str | None = None, batch: int | None = None,
            seq_len: int | None = None, iterations: int = 3, seed: int = 0, atol: float | None = None,
            rtol: float | None = None) -> CompareReport:
    """Compare ``candidate`` (a .plan with its sidecar, or an .onnx) against ``reference`` under ONNX Runtime."""
    reference, candidate = Path(reference), Path(candidate)
    for path in (reference, candidate):
        if not path.is_file():
            raise AdaretError(f"{path} does not exist")
    model = gf.load_model(reference)
    sidecar = load_sidecar(candidate) if candidate.suffix != ".onnx" else None
    precision = precision or (sidecar.precision if sidecar else "fp32")
    if precision not in TOLERANCES:
        raise AdaretError(f"unknown precision {precision!r}; choose one of {', '.join(TOLERANCES)}")
    models = [model] if sidecar else [model, gf.load_model(candidate)]
    batch, seq_len = _shape(models, sidecar, batch, seq_len)
    inputs = {v.name: gf.dtype_name(v) or "INT64" for v in model.graph.inputs}
    feeds = make_feeds(inputs, batch, seq_len, gf.graph_vocabulary(model, reference.parent), count=iterations,
                       seed=seed)
    default_atol, default_rtol = TOLERANCES[precision]
    atol, rtol = default_atol if atol is None else atol, default_rtol if rtol is None else rtol
    runners = [_onnxrt_runner(reference, "onnxruntime"), _candidate_runner(candidate, sidecar)]
    report = CompareReport(str(reference), str(candidate), precision, atol, rtol, batch, seq_len, iterations, False)
    return _run(runners, feeds, report)


def _shape(models: list[Any], sidecar: EngineSidecar | None, batch: int | None,
           seq_len: int | None) -> tuple[int, int]:
    """Batch and length to feed: asked for, else fixed by either graph, else the plan's OPT shape."""
    fixed = [next(iter(gf.input_dims(model).values())) for model in models]
    batches = {dims[0] for dims in fixed if isinstance(dims[0], int)}
    lengths = {dims[1] for dims in fixed if isinstance(dims[1], int)}
    profile = sidecar.profiles[0] if sidecar and sidecar.profiles else None
    if profile is not None:
        lengths.add(profile.seq_len)
    if len(lengths) > 1 or (seq_len is not None and lengths and seq_len not in lengths):
        raise AdaretError(f"the graphs are static for different lengths ({sorted(lengths | {seq_len} - {None})}); "
                          f"compare graphs of the same bucket")
    seq_len = seq_len or next(iter(lengths), None)
    if seq_len is None:
        raise AdaretError("both graphs have a dynamic sequence length: give --seq-len")
    batch = batch or next(iter(batches), None) or (profile.batch_range[1] if profile else DEFAULT_BATCH)
    return batch, seq_len


def _onnxrt_runner(path: Path, name: str) -> Any:
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    return OnnxrtRunner(SessionFromOnnx(str(path), providers=["cpu"]), name=name)


def _candidate_runner(path: Path, sidecar: EngineSidecar | None) -> Any:
    if sidecar is None:
        return _onnxrt_runner(path, f"onnxruntime:{path.name}")
    return plan_runner(path, sidecar)[1]  # the runtime's path too: the same sidecar checks, the same TrtRunner


def _compare_func(atol: float, rtol: float, exact: list[str]) -> Any:
    from polygraphy import comparator

    tolerances_atol = {"": atol, **{name: 0.0 for name in exact}}
    tolerances_rtol = {"": rtol, **{name: 0.0 for name in exact}}
    simple = getattr(comparator, "SimpleCompareFunc", None)  # CompareFunc.simple is deprecated from 0.53
    if simple is not None:
        return simple(atol=tolerances_atol, rtol=tolerances_rtol, check_error_stat="max")
    return comparator.CompareFunc.simple(atol=tolerances_atol, rtol=tolerances_rtol, check_error_stat="max")


def _run(runners: list[Any], feeds: list[dict[str, np.ndarray]], report: CompareReport) -> CompareReport:
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR  # the verdict and the diffs are reported below, once
    results = polygraphy_call(Comparator.run, "the comparison could not run", runners, data_loader=feeds)
    (_, reference_iters), (_, candidate_iters) = list(results.items())
    names = [name for name in reference_iters[0] if name in candidate_iters[0]]
    if not names:
        raise AdaretError("the two models share no output names to compare")
    exact = [name for name in names if name.startswith(EXACT_PREFIX)]
    with np.errstate(divide="ignore", invalid="ignore"):  # relative error of exact zeros (positions) is 0/0
        accuracy = Comparator.compare_accuracy(results, compare_func=_compare_func(report.atol, report.rtol, exact))
    for name in names:
        pairs = [(np.asarray(ref[name]), np.asarray(cand[name])) for ref, cand in zip(reference_iters,
                                                                                        candidate_iters, strict=True)]
        if name in exact:
            report.exact_match[name] = all(a.shape == b.shape and np.array_equal(a, b) for a, b in pairs)
        else:
            report.max_abs_diff[name] = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                                            for a, b in pairs)
    report.passed = bool(accuracy) and all(report.exact_match.values())
    return report
