"""``adaret optimize``: run the passes for a target, each checked against the unoptimised graph."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from adaret.errors import AdaretError, ParityError
from adaret.export.metadata import read_metadata, write_metadata
from adaret.export.onnx_export import save_model
from adaret.export.parity import DEFAULT_TOLERANCE, random_inputs
from adaret.fileio import atomic_file
from adaret.graph_passes.base import GraphPass, PassReport, diff_histograms, op_histogram
from adaret.graph_passes.passes import (
    CleanupPass,
    Float16Pass,
    FoldConstantsPass,
    LastLayerPruningPass,
    OrderRestoreEliminationPass,
    PackedAttentionPass,
    RowGatherPass,
    SplitSkipLayerNormPass,
    TransformerFusionPass,
)

PASSES: dict[str, type[GraphPass]] = {p.name: p for p in (
    FoldConstantsPass, CleanupPass, TransformerFusionPass, OrderRestoreEliminationPass, LastLayerPruningPass,
    PackedAttentionPass, RowGatherPass, SplitSkipLayerNormPass, Float16Pass)}
FP16_TARGETS = ("ort-cuda", "tensorrt")
TARGET_PASSES: dict[str, tuple[str, ...]] = {
    "ort-cpu": ("fold-constants", "cleanup", "order-restore-elimination", "ort-fusions", "last-layer-pruning",
                "packed-attention", "row-gather", "split-skip-layernorm", "cleanup"),
    # The graph to quantise for ONNX Runtime CPU: packed Attention computes Q, K and V inside one fp32 node,
    # which QDQ cannot reach; unpacked, the three projections become INT8 GEMMs (docs/calibration.md).
    "ort-cpu-int8": ("fold-constants", "cleanup", "order-restore-elimination", "ort-fusions", "last-layer-pruning",
                     "row-gather", "split-skip-layernorm", "cleanup"),
    "ort-cuda": ("fold-constants", "cleanup", "order-restore-elimination", "ort-fusions", "last-layer-pruning",
                 "packed-attention", "row-gather", "cleanup"),
    # TensorRT fuses on its own and cannot run ONNX Runtime's contrib ops.
    "tensorrt": ("fold-constants", "cleanup", "order-restore-elimination", "cleanup"),
}


@dataclass
class OptimizeResult:
    source: Path
    output: Path
    target: str
    reports: list[PassReport] = field(default_factory=list)
    report_path: Path | None = None

    @property
    def nodes_before(self) -> int:
        return self.reports[0].nodes_before if self.reports else 0

    @property
    def nodes_after(self) -> int:
        return self.reports[-1].nodes_after if self.reports else 0


class ParityProbe:
    """The unoptimised graph's outputs on fixed random inputs, to check each pass against."""

    def __init__(self, model: onnx.ModelProto, tolerance: float, seed: int = 0):
        self.tolerance = tolerance
        meta = read_metadata(model)
        session = _session(model)
        max_len = int(meta.get("max_positions", 512))
        static = meta.get("form") == "static"
        shapes = [(2, int(meta["seq_len"]))] if static else [(1, 37), (3, min(128, max_len)), (2, max_len)]
        fixed_batch = _fixed_batch(session)
        if fixed_batch is not None:  # an --batch N export refuses any other batch size
            shapes = [(fixed_batch, n) for _, n in shapes]
        generator = np.random.default_rng(seed)
        names = [i.name for i in session.get_inputs()]
        self.feeds = [{k: v for k, v in random_inputs(b, n, 30522, generator).items() if k in names}
                      for b, n in shapes]
        self.expected = [session.run(None, f) for f in self.feeds]
        self.output_names = [o.name for o in session.get_outputs()]

    def max_abs_diff(self, model: onnx.ModelProto, pass_name: str, tolerance: float | None = None) -> float:
        tolerance = self.tolerance if tolerance is None else tolerance
        session = _session(model)
        worst = 0.0
        for feeds, expected in zip(self.feeds, self.expected, strict=True):
            got = dict(zip(self.output_names, session.run(self.output_names, feeds), strict=True))
            worst = max(worst, float(np.abs(got["logits"] - expected[0]).max()))
            for name, want in zip(self.output_names[1:], expected[1:], strict=True):
                if not np.array_equal(np.sort(got[name], axis=1), np.sort(want, axis=1)):
                    raise ParityError(f"pass {pass_name} changed the kept tokens ({name})")
        if worst > tolerance:
            raise ParityError(f"pass {pass_name} broke parity: max |logit diff| {worst:.2e} > {tolerance:.0e}")
        return worst


def _fixed_batch(session) -> int | None:
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def optimize(source: Path, output: Path, *, target: str = "ort-cpu", passes: Sequence[str] | None = None,
             tolerance: float = DEFAULT_TOLERANCE, fp16: bool = False) -> OptimizeResult:
    """Run ``passes`` (default: the target's list, plus fp16 when asked) over ``source``, check parity after
    each, write ``output``."""
    names = list(passes) if passes is not None else list(_target_passes(target))
    if fp16:
        if target not in FP16_TARGETS:
            raise AdaretError(f"--fp16 is for GPU targets ({', '.join(FP16_TARGETS)}), not {target}")
        names.append(Float16Pass.name)
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise AdaretError(f"unknown pass(es) {', '.join(unknown)}; available: {', '.join(PASSES)}")
    proto = _load(source)
    probe = ParityProbe(proto, tolerance)
    model = ir.serde.deserialize_model(proto)
    result = OptimizeResult(Path(source), Path(output), target)
    for name in names:
        model, report = _run_pass(PASSES[name](), model, probe)
        result.reports.append(report)
    final = ir.serde.serialize_model(model)
    summary = [{"pass": r.name, "modified": r.modified, "skipped": r.skipped, "nodes": [r.nodes_before, r.nodes_after]}
               for r in result.reports]
    write_metadata(final, {**read_metadata(final), "pass_report": summary, "optimized_for": target})
    save_model(final, Path(output))
    result.report_path = _write_report(result)
    return result


def _run_pass(graph_pass: GraphPass, model: ir.Model, probe: ParityProbe) -> tuple[ir.Model, PassReport]:
    started = time.perf_counter()
    before = op_histogram(model)
    result = graph_pass(model)
    after = op_histogram(result.model)
    removed, added = diff_histograms(before, after)
    report = PassReport(graph_pass.name, result.modified, sum(before.values()), sum(after.values()), removed, added,
                        graph_pass.details, graph_pass.skipped)
    if result.modified:
        report.max_abs_diff = probe.max_abs_diff(ir.serde.serialize_model(result.model), graph_pass.name,
                                                 graph_pass.parity_tolerance)
    report.seconds = round(time.perf_counter() - started, 2)
    return result.model, report


def _target_passes(target: str) -> tuple[str, ...]:
    if target not in TARGET_PASSES:
        raise AdaretError(f"unknown target {target!r}; choose one of {', '.join(TARGET_PASSES)}")
    return TARGET_PASSES[target]


def _load(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise AdaretError(f"ONNX model {path} does not exist") from None
    except Exception as exc:
        raise AdaretError(f"cannot read ONNX model {path}: {exc}") from None
    if "form" not in read_metadata(model):
        raise AdaretError(f"{path} was not exported by adaret (no adaret.* metadata)")
    return model


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _write_report(result: OptimizeResult) -> Path:
    path = result.output.with_suffix(".passes.json")
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"source": result.source.name, "target": result.target,
                                   "passes": [asdict(r) for r in result.reports]}, indent=2) + "\n")
    return path
