"""ONNX Runtime against the PyTorch hard top-M reference on fresh random inputs.

Kept positions must match exactly except on a near-tie (``adaret.core.comparison``): a row whose kept sets first
differ at a layer where every swapped token's reference score is within ``NEAR_TIE_MARGIN`` of the boundary is
counted, with its gap, and its outputs are not compared. Any other difference fails the check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from adaret.core.comparison import NEAR_TIE_MARGIN, kept_set_disagreements, max_abs_diff, scores_by_position
from adaret.core.constants import DEFAULT_TOLERANCE
from adaret.core.dummy_inputs import Vocabulary, dummy_inputs
from adaret.core.errors import AdaretError
from adaret.core.io_spec import ATTENTION_MASK
from adaret.core.ort_sessions import make_session
from adaret.core.reports import CaseReport, every, worst
from adaret.export.inference import TopMInference, kept_positions_name, ranking_scores_name
from adaret.modeling import RetentionModel


@dataclass
class ParityCase:
    batch: int
    seq_len: int
    max_abs_diff: float  # over the rows that are not near-ties
    positions_identical: bool  # every row keeps the same positions at every layer, ties or not
    positions_within_bound: bool  # every row matches exactly or differs by a near-tie only: what the gate requires
    # one gap per row whose kept sets differ by a near-tie only (its outputs are not compared)
    near_tie_gaps: list[float] = field(default_factory=list)


class ParityReport(CaseReport[ParityCase]):
    summary_fields = ("max_abs_diff", "positions_identical", "near_ties")

    max_abs_diff = worst("max_abs_diff")
    positions_identical = every("positions_identical")
    positions_within_bound = every("positions_within_bound")

    @property
    def near_ties(self) -> int:
        """Rows whose kept sets differed by a near-tie only (allowed, and not compared further)."""
        return sum(len(c.near_tie_gaps) for c in self.cases)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and self.max_abs_diff <= self.tolerance and self.positions_within_bound

    @property
    def positions_verdict(self) -> str:
        """How the kept positions compared, in words: identical, identical but for near-ties, or DIFFERENT."""
        if self.positions_identical:
            return "identical"
        if not self.positions_within_bound:
            return "DIFFERENT"
        gap = max(g for c in self.cases for g in c.near_tie_gaps)
        return f"identical but for {self.near_ties} near-tie row(s) (score gap {gap:.1e} <= {NEAR_TIE_MARGIN:.0e})"

    def as_dict(self) -> dict:
        return {**super().as_dict(), "near_tie_margin": NEAR_TIE_MARGIN}


def model_vocabulary(model: RetentionModel, tokenizer: Any) -> Vocabulary:
    """The checkpoint tokenizer's special ids, and the ids the model's embedding table can index."""
    rows = int(model.encoder.config.vocab_size)
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if cls_id is None or sep_id is None:
        raise AdaretError("the checkpoint's tokenizer defines no CLS/BOS or SEP/EOS token")
    return Vocabulary(min(len(tokenizer), rows), int(cls_id), int(sep_id), int(tokenizer.pad_token_id or 0))


@torch.no_grad()
def check_parity(module: TopMInference, onnx_path: Path, shapes: Sequence[tuple[int, int]], vocab: Vocabulary, *,
                 tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, session: ort.InferenceSession | None = None,
                 margin: float = NEAR_TIE_MARGIN) -> ParityReport:
    """Run both on the same random inputs for each (batch, seq_len); compare the task's outputs and kept positions.

    Kept positions are compared only when the ONNX graph exposes them as outputs; then a row whose kept sets
    differ by a near-tie within ``margin`` (``adaret.core.comparison``) is counted and left out of the output
    comparison, and any other difference fails. ``margin=0`` is the strict check (it excuses exact ties only).
    Per-position outputs (question answering's start and end logits) are compared at real positions only: a
    padding slot's logit is never read.
    """
    session = session or make_session(onnx_path)
    names = [o.name for o in session.get_outputs()]
    generator = np.random.default_rng(seed)
    report = ParityReport(tolerance)
    reference_module = TopMInference(module.model, module.schedule, with_positions=True, with_scores=True,
                                     keep_order=module.keep_order, scorer=module.scorer).eval()
    for batch, seq_len in shapes:
        feeds = dummy_inputs(batch, seq_len, vocab, generator, names=[i.name for i in session.get_inputs()],
                             segments=module.model.config.is_question_answering)
        got = dict(zip(names, session.run(names, feeds), strict=True))
        expected = reference_module(*(torch.from_numpy(v) for v in feeds.values()))
        want = dict(zip(reference_module.output_names, (t.numpy() for t in expected), strict=True))
        report.cases.append(compare_case(module, got, want, feeds[ATTENTION_MASK], margin))
    return report


def compare_case(module: TopMInference, got: dict[str, np.ndarray], want: dict[str, np.ndarray],
                 attention_mask: np.ndarray, margin: float = NEAR_TIE_MARGIN) -> ParityCase:
    """One batch: ``got`` holds the graph's outputs, ``want`` the reference's with positions and scores."""
    task_outputs = module.io_spec.outputs
    batch, seq_len = attention_mask.shape
    kept = [kept_positions_name(layer) for layer in module.pruned_layers]
    exposed = [name for name in got if name not in task_outputs]
    if exposed and exposed != kept:  # not the reference's layers: nothing to compare them with
        diff = max(max_abs_diff(got[n], want[n], attention_mask) for n in task_outputs)
        return ParityCase(batch, seq_len, diff, False, False)
    kept = exposed  # a graph without positions: outputs only
    identical = [all(np.array_equal(got[n][row], want[n][row]) for n in kept) for row in range(batch)]
    scores = scores_by_position([want[ranking_scores_name(layer)] for layer in module.pruned_layers],
                                [want[n] for n in kept], seq_len) if kept else []
    found = kept_set_disagreements([got[n] for n in kept], [want[n] for n in kept], scores, margin)
    # a row whose kept positions differ in order only (at any layer before its first set difference) is not a
    # near-tie: it fails like any other
    ties = {row: d for row, d in found.items()
            if d.near_tie and all(np.array_equal(got[n][row], want[n][row]) for n in kept[:d.layer])}
    rows = [row for row in range(batch) if row not in ties]
    diff = max((max_abs_diff(got[n][rows], want[n][rows], attention_mask[rows]) for n in task_outputs), default=0.0)
    return ParityCase(batch, seq_len, diff, all(identical), all(identical[row] for row in rows),
                      [ties[row].gap for row in sorted(ties)])
