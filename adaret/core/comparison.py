"""How two backends' outputs are compared: one rule for the export's parity gate and the graph passes' probe.

Kept positions are compared exactly, with one documented exception, the near-tie (docs/reliability.md, "Parity
on near-ties"). Both backends compute the gate scores in fp32 with different kernels, so the scores agree only to
about 1e-6 to 1e-5 (``BACKEND_SCORE_NOISE``). When two candidates' scores at the K_l boundary are closer than
that, the backends can keep different tokens, and every later layer then sees different tokens; no grid or
tie-break can remove that, because a score within the noise of any cut (a grid edge included) falls on either
side of it. So:

    A row's kept sets may differ only at a near-tie. At the first pruned layer where the two backends keep
    different sets of positions, every position in the symmetric difference must have a reference score within
    ``NEAR_TIE_MARGIN`` of the reference's boundary (the K_l-th largest reference score among that layer's
    candidates, i.e. the lowest score the reference kept). Such a row is reported as a near-tie, with its gap,
    and its outputs are not compared (later layers legitimately differ). Every other row must keep the same
    positions at every layer and match the outputs within the tolerance.

Forced tokens (CLS, a question segment) and padding are ranked by ``FORCED_LOGIT``-sized scores that differ by
at least 1 and are exact in both backends, so a disagreement involving one is never a near-tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from adaret.core import graph_facts as gf

# The largest |ONNX Runtime score - PyTorch score| measured at the inputs of the score TopKs (on layers whose
# candidates are the same on both sides), rounded up: 9.5e-6 over 2,259 rows of the bundled adapter at budgets
# 0.3, 0.4 and 0.5, random draws and held-out text (benchmarks/results/near_ties_confirm.md). Scores there span
# about +-10 (1.9e-6 at the first pruned layer of the one recorded disagreement, tests/test_near_ties.py).
BACKEND_SCORE_NOISE = 1e-5
# 50x that noise: far enough above it that a kernel, ISA or library change that makes the noise several times
# larger still classifies a genuine tie as one, and far below the spacing of neighbouring scores (about 0.04 for
# 500 candidates over a range of 20), so a swap caused by a wrong weight or a wrong graph, which moves scores by
# a sizeable fraction of their range, is not excused.
NEAR_TIE_MARGIN = 5e-4


def max_abs_diff(got: np.ndarray, want: np.ndarray, attention_mask: np.ndarray) -> float:
    """The largest |got - want|; a per-position output ([batch, sequence], e.g. a start logit) counts only at real
    positions, because nothing reads a padding slot's value and its state is not defined by the model."""
    diff = np.abs(np.asarray(got, dtype=np.float64) - np.asarray(want, dtype=np.float64))
    if diff.shape == attention_mask.shape:
        diff = diff[attention_mask == 1]
    return float(diff.max()) if diff.size else 0.0


@dataclass(frozen=True)
class KeptSetDisagreement:
    """Where and by how much one row's kept sets first differ between two backends."""

    row: int
    layer: int  # index into the pruned layers (the kept-position outputs), not the encoder layer
    swapped: tuple[int, ...]  # original positions kept by exactly one of the two backends at that layer
    gap: float  # the largest |reference score - reference boundary| over ``swapped``; inf for a non-candidate
    margin: float

    @property
    def near_tie(self) -> bool:
        return self.gap <= self.margin


def scores_by_position(candidate_scores: Sequence[np.ndarray], kept: Sequence[np.ndarray],
                       seq_len: int) -> list[np.ndarray]:
    """Each pruned layer's ranking scores ([batch, candidates], in the order TopK saw them) indexed by original
    position ([batch, seq_len], NaN where a position is no longer a candidate). The candidates of a pruned layer
    are the positions the previous one kept, in its output order (all positions for the first)."""
    out = []
    for layer, scores in enumerate(candidate_scores):
        scores = np.asarray(scores, dtype=np.float64)
        dense = np.full((scores.shape[0], seq_len), np.nan)
        if layer == 0:
            dense[:, :scores.shape[1]] = scores
        else:
            np.put_along_axis(dense, np.asarray(kept[layer - 1], dtype=np.int64), scores, axis=1)
        out.append(dense)
    return out


def kept_set_disagreement(got: Sequence[np.ndarray], want: Sequence[np.ndarray], scores: Sequence[np.ndarray],
                          row: int = 0, margin: float = NEAR_TIE_MARGIN) -> KeptSetDisagreement | None:
    """The first pruned layer at which one row's kept sets differ, classified by the near-tie rule; None if they
    agree at every layer.

    ``got``/``want``: the row's kept original positions per pruned layer (the checked backend's and the
    reference's); ``scores``: the reference's ranking score per original position at each pruned layer (NaN
    where a position is not a candidate; see ``scores_by_position``). Only the first differing layer is
    classified: past it the two backends rank different tokens, so later differences follow from it.
    """
    for layer, (mine, theirs, score) in enumerate(zip(got, want, scores, strict=True)):
        mine, theirs = np.asarray(mine, dtype=np.int64), np.asarray(theirs, dtype=np.int64)
        if np.array_equal(np.sort(mine), np.sort(theirs)):
            continue
        swapped = tuple(int(p) for p in np.setxor1d(mine, theirs))
        score = np.asarray(score, dtype=np.float64)
        gap = np.inf
        if len(set(mine.tolist())) == len(mine) and all(0 <= p < len(score) for p in swapped):
            boundary = score[theirs].min()  # the K_l-th largest candidate score: the lowest one the reference kept
            gap = float(np.max(np.abs(score[list(swapped)] - boundary)))  # NaN (a non-candidate) propagates
            gap = np.inf if np.isnan(gap) else gap
        return KeptSetDisagreement(row, layer, swapped, gap, margin)
    return None


def kept_set_disagreements(got: Sequence[np.ndarray], want: Sequence[np.ndarray], scores: Sequence[np.ndarray],
                           margin: float = NEAR_TIE_MARGIN) -> dict[int, KeptSetDisagreement]:
    """``kept_set_disagreement`` for every row of a batch ([batch, K_l] per pruned layer; ``scores`` [batch, n]
    per pruned layer), keyed by row; rows whose kept sets agree at every layer are absent."""
    found = {}
    for row in range(len(want[0]) if want else 0):
        d = kept_set_disagreement([g[row] for g in got], [w[row] for w in want], [s[row] for s in scores], row,
                                  margin)
        if d is not None:
            found[row] = d
    return found


def with_ranking_scores(model: onnx.ModelProto, kept_outputs: Sequence[str]) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of an exported top-M graph that also outputs what each score TopK ranks ([batch, candidates]), one
    per kept-positions output, in layer order: ONNX Runtime's side of the score comparison. For measurement and
    for a reference graph only; the extra outputs may stop ONNX Runtime fusing across them."""
    model_ir = gf.with_types(gf.load_model(model))
    values = [node.inputs[0] for node in model_ir.graph if gf.is_score_topk(node)]
    if len(values) != len(kept_outputs):
        raise ValueError(f"{len(values)} score TopKs for {len(kept_outputs)} kept-position outputs")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    names = [v.name for v in values]
    existing = {o.name for o in copy.graph.output}
    for name in names:
        if name not in existing:
            copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return copy, names
