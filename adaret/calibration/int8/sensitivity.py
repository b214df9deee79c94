"""Mixed precision by measured token agreement: put back in fp32 the fewest MatMuls that reach a target.

Token agreement is the share of the real positions that fp32 keeps which INT8 keeps too (as in ``verify``),
here over calibration texts, so that no held-out text decides what is quantised. The search:

    a_all  = agreement(every planned MatMul in INT8)                  done if low(a_all) >= target
    gain_m = agreement(m alone back in fp32) - a_all                  for each MatMul m before the last gate
    restore MatMuls in decreasing gain_m until low(agreement) >= target   (re-measured after each one)

low(a) is a one-sided 95% lower bound, a - 1.645 SE, with the ratio estimator's standard error over texts
(flips cluster within a text): SE^2 = sum_i (s_i - a k_i)^2 / (n (n - 1) mean(k)^2), for text i keeping k_i
fp32 positions of which s_i survive. Without it, a graph that scrapes past the target on the calibration
texts falls just short on new ones. In question answering a row is a window, and the windows of one question
overlap (``doc_stride``), so the clusters are the questions: a caller passes each row's example.

A MatMul after the last gate cannot move a token choice, so it is never a candidate. Candidates are tried on
the INT8 graph in memory: the MatMul reads its float input and its float weight again.

Kept positions come from the score TopKs' indices, mapped back to original positions layer by layer: each
TopK indexes the sequence that the previous gate left, which is in ascending position order when the export
re-sorts it (a second TopK on the indices) and in score order when ``order-restore-elimination`` removed that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir

from adaret.calibration.int8.defaults import TARGET_AGREEMENT
from adaret.calibration.int8.verify import overlap, session_with_outputs
from adaret.core import graph_facts as gf

SEARCH_TEXTS = 64  # calibration texts the search measures on: enough for ~10^4 kept positions at seq 512
Z_ONE_SIDED_95 = 1.645


@dataclass(frozen=True)
class Agreement:
    value: float
    lower: float  # one-sided 95% lower bound over texts

    @classmethod
    def of(cls, kept: np.ndarray, shared: np.ndarray) -> Agreement:
        """Ratio estimate sum(shared) / sum(kept) over texts, and its lower bound."""
        total = int(kept.sum())
        if total == 0:
            return cls(1.0, 1.0)
        value = float(shared.sum()) / total
        n = len(kept)
        if n < 2:
            return cls(value, 0.0)
        variance = float(((shared - value * kept) ** 2).sum()) / (n * (n - 1) * kept.mean() ** 2)
        return cls(value, float(value - Z_ONE_SIDED_95 * variance ** 0.5))


@dataclass
class SearchReport:
    target: float
    texts: int
    kept_positions: int
    agreement_all_int8: float
    agreement: float
    agreement_lower: float  # what is compared with the target
    restored: list[str] = field(default_factory=list)  # MatMuls put back in fp32, in the order chosen
    gains: dict[str, float] = field(default_factory=dict)
    examples: int | None = None  # clusters of the bound (questions) when they are not the rows (windows)

    @property
    def reached(self) -> bool:
        return self.agreement_lower >= self.target

    def update(self, measured: Agreement) -> None:
        self.agreement, self.agreement_lower = measured.value, measured.lower


@dataclass
class _Gates:
    """Where the kept tokens can be read: each score TopK's index output, and whether its order is restored."""

    index_outputs: list[str]
    sorted_after: list[bool]
    last_topk: str

    @classmethod
    def of(cls, model: ir.Model) -> _Gates:
        topks = [node for node in model.graph if gf.is_score_topk(node)]
        if not topks:
            raise ValueError("the graph has no score TopK")
        restored = [any(user.op_type == "TopK" for user, _ in gf.consumers(t.outputs[1])) for t in topks]
        return cls([t.outputs[1].name for t in topks], restored, topks[-1].name)


def kept_positions(indices: Sequence[np.ndarray], sorted_after: Sequence[bool], seq_len: int) -> list[np.ndarray]:
    """Original positions kept at each gate, from the TopK indices into the previous gate's sequence."""
    positions = np.broadcast_to(np.arange(seq_len), (indices[0].shape[0], seq_len))
    kept = []
    for index, restore in zip(indices, sorted_after, strict=True):
        positions = np.take_along_axis(positions, index, axis=1)
        if restore:
            positions = np.sort(positions, axis=1)
        kept.append(positions)
    return kept


class AgreementProbe:
    """fp32 kept positions on fixed batches, and the agreement of any candidate graph with them.

    ``examples`` gives, per batch, the example each row belongs to (the clusters of the lower bound); without
    it every row is its own example.
    """

    def __init__(self, fp32: onnx.ModelProto, batches: list[dict], examples: list[Sequence[int]] | None = None):
        self.gates = _Gates.of(gf.load_model(fp32))
        self.batches = batches
        self.examples = examples
        self.reference = [self._positions(self._session(fp32), feeds) for feeds in batches]
        self.kept_positions = int(self._per_text(self.reference)[0].sum())

    def agreement(self, model: onnx.ModelProto) -> Agreement:
        session = self._session(model)
        return Agreement.of(*self._per_text([self._positions(session, feeds) for feeds in self.batches]))

    def _per_text(self, candidate: list[list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
        """Per example: real positions fp32 keeps over all gates and rows, and how many of them ``candidate`` keeps."""
        totals: dict[int, list[int]] = {}
        for number, (feeds, reference, positions) in enumerate(zip(self.batches, self.reference, candidate,
                                                                   strict=True)):
            lengths = feeds["attention_mask"].sum(1)
            for row in range(len(lengths)):
                key = self.examples[number][row] if self.examples else len(totals)
                counts = [overlap(ref[row:row + 1], cand[row:row + 1], lengths[row:row + 1])
                          for ref, cand in zip(reference, positions, strict=True)]
                total = totals.setdefault(key, [0, 0])
                total[0] += sum(k for k, _ in counts)
                total[1] += sum(s for _, s in counts)
        kept, shared = zip(*totals.values(), strict=True) if totals else ((), ())
        return np.array(kept, dtype=np.float64), np.array(shared, dtype=np.float64)

    def _positions(self, session, feeds: dict) -> list[np.ndarray]:
        names = [i.name for i in session.get_inputs()]
        indices = session.run(self.gates.index_outputs, {k: feeds[k] for k in names})
        return kept_positions(indices, self.gates.sorted_after, feeds["input_ids"].shape[1])

    def _session(self, model: onnx.ModelProto):
        return session_with_outputs(model, self.gates.index_outputs)


def candidates(fp32: onnx.ModelProto, quantized: Sequence[str]) -> list[str]:
    """Quantised MatMuls that come before the last gate (graph order is topological)."""
    model = gf.load_model(fp32)
    last = _Gates.of(model).last_topk
    before: set[str] = set()
    for node in model.graph:
        if node.name == last:
            break
        before.add(node.name)
    return [name for name in quantized if name in before]


def search(fp32: onnx.ModelProto, int8: onnx.ModelProto, quantized: Sequence[str], batches: list[dict],
           target: float = TARGET_AGREEMENT, quantized_from: onnx.ModelProto | None = None,
           examples: list[Sequence[int]] | None = None) -> SearchReport:
    """Which of ``quantized`` (MatMul names in ``int8``) to put back in fp32 so that agreement >= ``target``.

    ``fp32`` is the reference; ``quantized_from`` the float graph ``int8`` was made from, when that differs
    (a smoothed copy): restored MatMuls take their float weights from it. ``examples``: see ``AgreementProbe``.
    """
    source = fp32 if quantized_from is None else quantized_from
    probe = AgreementProbe(fp32, batches, examples)
    restorer = _Restorer(source, int8)
    first = probe.agreement(int8)
    clusters = len({e for rows in examples for e in rows}) if examples else None
    report = SearchReport(target, sum(len(b["input_ids"]) for b in batches), probe.kept_positions, first.value,
                          first.value, first.lower, examples=clusters)
    if report.reached:
        return report
    report.gains = {name: probe.agreement(restorer.with_fp32([name])).value - first.value
                    for name in candidates(source, quantized)}
    for name in sorted(report.gains, key=report.gains.get, reverse=True):
        if report.reached or report.gains[name] <= 0:
            break
        report.restored.append(name)
        report.update(probe.agreement(restorer.with_fp32(report.restored)))
    return report


class _Restorer:
    """The INT8 graph with chosen MatMuls reading their float input and float weight again."""

    def __init__(self, fp32: onnx.ModelProto, int8: onnx.ModelProto):
        weights = {t.name: t for t in fp32.graph.initializer}
        self.float_weight = {n.name: n.input[1] for n in fp32.graph.node
                             if n.op_type == "MatMul" and n.input[1] in weights}
        self.base = onnx.ModelProto()
        self.base.CopyFrom(int8)
        present = {t.name for t in self.base.graph.initializer}
        self.base.graph.initializer.extend(weights[w] for w in set(self.float_weight.values()) if w not in present)
        self.producer = {out: node for node in self.base.graph.node for out in node.output}

    def with_fp32(self, names: Sequence[str]) -> onnx.ModelProto:
        model = onnx.ModelProto()
        model.CopyFrom(self.base)
        wanted = set(names)
        for node in model.graph.node:
            if node.name in wanted:
                node.input[0] = self._float_source(node.input[0])
                node.input[1] = self.float_weight[node.name]
        return model

    def _float_source(self, tensor: str) -> str:
        """DequantizeLinear(QuantizeLinear(x)) -> x; anything else is already float."""
        dq = self.producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return tensor
        q = self.producer.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else tensor
