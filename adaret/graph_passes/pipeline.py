"""``adaret optimize``: run the passes for a target, each checked against the unoptimised graph."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from adaret.core import graph_facts as gf
from adaret.core.comparison import kept_set_disagreements, max_abs_diff, scores_by_position, with_ranking_scores
from adaret.core.constants import DEFAULT_TOLERANCE
from adaret.core.dummy_inputs import dummy_inputs
from adaret.core.errors import AdaretError, ParityError
from adaret.core.fileio import atomic_file
from adaret.core.io_spec import ATTENTION_MASK, QUESTION_ANSWERING, TASKS
from adaret.core.metadata import ExportMetadata
from adaret.core.onnx_files import save_model
from adaret.core.ort_sessions import make_session
from adaret.core.outputs import output_file, refresh_manifest
from adaret.graph_passes.base import PassReport, diff_histograms, op_histogram
from adaret.graph_passes.passes import ALL_PASSES, Float16Pass

PASSES: dict[str, type[ir.passes.PassBase]] = {p.name: p for p in ALL_PASSES}
FP16_TARGETS = ("ort-cuda", "tensorrt")
TARGET_PASSES: dict[str, tuple[str, ...]] = {
    "ort-cpu": ("fold-constants", "cleanup", "order-restore-elimination", "ort-fusions", "last-layer-pruning",
                "packed-attention", "row-gather", "row-scatter", "split-skip-layernorm", "cleanup"),
    # The graph to quantise for ONNX Runtime CPU: packed Attention computes Q, K and V inside one fp32 node,
    # which QDQ cannot reach; unpacked, the three projections become INT8 GEMMs (docs/calibration.md).
    "ort-cpu-int8": ("fold-constants", "cleanup", "order-restore-elimination", "ort-fusions", "last-layer-pruning",
                     "row-gather", "row-scatter", "split-skip-layernorm", "cleanup"),
    "ort-cuda": ("fold-constants", "cleanup", "order-restore-elimination", "ort-fusions", "last-layer-pruning",
                 "packed-attention", "row-gather", "row-scatter", "cleanup"),
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
    """The unoptimised graph's outputs on fixed random inputs, to check each pass against.

    Kept positions must match the unoptimised graph's, except on a near-tie (``adaret.core.comparison``): a pass
    that only reorders float arithmetic moves scores by about 1e-6, which can swap two tokens tied at the K_l
    boundary; such a row is not compared further. To tell a tie from a bug, the unoptimised graph also outputs
    what each score TopK ranks.
    """

    def __init__(self, model: onnx.ModelProto, tolerance: float, directory: Path | None = None, seed: int = 0):
        self.tolerance = tolerance
        meta = ExportMetadata.from_model(model)
        vocab = gf.graph_vocabulary(model, directory)
        self.task_outputs = TASKS[meta.task].outputs
        self.output_names = [o.name for o in model.graph.output]
        self.kept_names = [name for name in self.output_names if name not in self.task_outputs]
        scored, self.score_names = model, []
        # not one score TopK per kept output (a hand-made graph): no scores, so every difference fails
        with contextlib.suppress(ValueError):
            if self.kept_names:
                scored, self.score_names = with_ranking_scores(model, self.kept_names)
        session = make_session(scored)
        max_len = meta.max_positions or 512
        shapes = [(2, meta.seq_len)] if meta.seq_len else [(1, 37), (3, min(128, max_len)), (2, max_len)]
        fixed_batch = _fixed_batch(session)
        if fixed_batch is not None:  # an --batch N export refuses any other batch size
            shapes = [(fixed_batch, n) for _, n in shapes]
        generator = np.random.default_rng(seed)
        names = [i.name for i in session.get_inputs()]
        segments = meta.task == QUESTION_ANSWERING.task
        self.feeds = [dummy_inputs(b, n, vocab, generator, names=names, segments=segments) for b, n in shapes]
        everything = [*self.output_names, *self.score_names]
        self.expected = [dict(zip(everything, session.run(everything, f), strict=True)) for f in self.feeds]

    def max_abs_diff(self, model: onnx.ModelProto, pass_name: str, tolerance: float | None = None) -> float:
        tolerance = self.tolerance if tolerance is None else tolerance
        session = make_session(model)
        worst = 0.0
        for feeds, expected in zip(self.feeds, self.expected, strict=True):
            got = dict(zip(self.output_names, session.run(self.output_names, feeds), strict=True))
            ties = self._near_ties(got, expected, feeds[ATTENTION_MASK].shape[1], pass_name)
            rows = [row for row in range(len(feeds[ATTENTION_MASK])) if row not in ties]
            for name in self.task_outputs:
                worst = max(worst, max_abs_diff(got[name][rows], expected[name][rows], feeds[ATTENTION_MASK][rows]))
        if worst > tolerance:
            raise ParityError(f"pass {pass_name} broke parity: max |logit diff| {worst:.2e} > {tolerance:.0e}")
        return worst

    def _near_ties(self, got: dict[str, np.ndarray], expected: dict[str, np.ndarray], seq_len: int,
                   pass_name: str) -> set[int]:
        """Rows whose kept sets differ by a near-tie only; a pass may drop the re-sort of the kept positions, so
        only the sets count. Any other difference raises."""
        want = [expected[name] for name in self.kept_names]
        scores = (scores_by_position([expected[name] for name in self.score_names], want, seq_len)
                  if self.score_names else [np.full((len(w), seq_len), np.nan) for w in want])  # no tie excused
        found = kept_set_disagreements([got[name] for name in self.kept_names], want, scores)
        for d in found.values():
            if not d.near_tie:
                raise ParityError(f"pass {pass_name} changed the kept tokens ({self.kept_names[d.layer]}, row "
                                  f"{d.row}: positions {list(d.swapped)}, {d.gap:.1e} from the boundary score)")
        return set(found)


def _fixed_batch(session) -> int | None:
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def optimize(source: Path, output: Path, *, target: str = "ort-cpu", passes: Sequence[str] | None = None,
             tolerance: float = DEFAULT_TOLERANCE, fp16: bool = False, overwrite: bool = False) -> OptimizeResult:
    """Run ``passes`` (default: the target's list, plus fp16 when asked) over ``source``, check parity after
    each, write ``output`` (an existing one only with ``overwrite``; in an export directory its manifest is
    updated)."""
    names = list(passes) if passes is not None else list(_target_passes(target))
    if fp16:
        if target not in FP16_TARGETS:
            raise AdaretError(f"--fp16 is for GPU targets ({', '.join(FP16_TARGETS)}), not {target}")
        names.append(Float16Pass.name)
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise AdaretError(f"unknown pass(es) {', '.join(unknown)}; available: {', '.join(PASSES)}")
    proto, meta = _load(source)
    output = Path(output)
    if output.resolve() == Path(source).resolve():
        raise AdaretError(f"output {output} would overwrite the graph it optimises; choose another -o")
    with output_file(output, overwrite=overwrite, what="output"):
        probe = ParityProbe(proto, tolerance, Path(source).parent)
        model = ir.serde.deserialize_model(proto)
        result = OptimizeResult(Path(source), output, target)
        manager = ir.passes.PassManager([ParityCheckedPass(PASSES[name](), probe, result.reports.append)
                                         for name in names], steps=1, early_stop=False)
        final = ir.serde.serialize_model(_run(manager, model))
        summary = [{"pass": r.name, "modified": r.modified, "skipped": r.skipped,
                    "nodes": [r.nodes_before, r.nodes_after]} for r in result.reports]
        meta.updated(pass_report=summary, optimized_for=target).write_to(final)
        save_model(final, output)
        result.report_path = _write_report(result)
        refresh_manifest(output.parent, [output.name, result.report_path.name])
    return result


class ParityCheckedPass(ir.passes.PassBase):
    """Runs ``inner``, measures what it changed, checks the result against the unoptimised graph's outputs,
    and hands the ``PassReport`` to ``record``: the pipeline's wrapper around each pass in its PassManager."""

    def __init__(self, inner: ir.passes.PassBase, probe: ParityProbe, record: Callable[[PassReport], None]):
        self.inner, self.probe, self.record = inner, probe, record

    # The wrapper changes the model exactly as the pass it wraps does.
    in_place = property(lambda self: self.inner.in_place)
    changes_input = property(lambda self: self.inner.changes_input)

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        started = time.perf_counter()
        before = op_histogram(model)
        result = self.inner(model)
        after = op_histogram(result.model)
        removed, added = diff_histograms(before, after)
        name = getattr(self.inner, "name", type(self.inner).__name__)
        report = PassReport(name, result.modified, sum(before.values()), sum(after.values()), removed, added,
                            getattr(result, "details", {}), getattr(result, "skipped", None))
        if result.modified:
            report.max_abs_diff = self.probe.max_abs_diff(ir.serde.serialize_model(result.model), name,
                                                          getattr(self.inner, "parity_tolerance", None))
        report.seconds = round(time.perf_counter() - started, 2)
        self.record(report)
        return result


def _run(manager: ir.passes.PassBase, model: ir.Model) -> ir.Model:
    """Run the pass manager; a failure of ours (a broken parity, a bad graph) surfaces as its own one line
    rather than inside the PassErrors that onnx-ir wraps around every failing pass."""
    try:
        return manager(model).model
    except ir.passes.PassError as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, AdaretError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def _target_passes(target: str) -> tuple[str, ...]:
    if target not in TARGET_PASSES:
        raise AdaretError(f"unknown target {target!r}; choose one of {', '.join(TARGET_PASSES)}")
    return TARGET_PASSES[target]


def _load(path: Path) -> tuple[onnx.ModelProto, ExportMetadata]:
    try:
        model = onnx.load(str(path))
    except FileNotFoundError:
        raise AdaretError(f"ONNX model {path} does not exist") from None
    except Exception as exc:
        raise AdaretError(f"cannot read ONNX model {path}: {exc}") from None
    return model, ExportMetadata.from_model(model, str(path))


def _write_report(result: OptimizeResult) -> Path:
    path = result.output.with_suffix(".passes.json")
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"source": result.source.name, "target": result.target,
                                   "passes": [asdict(r) for r in result.reports]}, indent=2) + "\n")
    return path
