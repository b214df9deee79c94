"""ONNX Runtime against the PyTorch hard top-M reference on fresh random inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from adaret.core.comparison import max_abs_diff
from adaret.core.constants import DEFAULT_TOLERANCE
from adaret.core.dummy_inputs import Vocabulary, dummy_inputs
from adaret.core.errors import AdaretError
from adaret.core.io_spec import ATTENTION_MASK
from adaret.core.ort_sessions import make_session
from adaret.export.inference import TopMInference
from adaret.modeling import RetentionModel


@dataclass
class ParityCase:
    batch: int
    seq_len: int
    max_abs_diff: float
    positions_identical: bool


@dataclass
class ParityReport:
    tolerance: float
    cases: list[ParityCase] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.cases), default=0.0)

    @property
    def positions_identical(self) -> bool:
        return all(c.positions_identical for c in self.cases)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and self.max_abs_diff <= self.tolerance and self.positions_identical

    def as_dict(self) -> dict:
        return {"tolerance": self.tolerance, "max_abs_diff": self.max_abs_diff,
                "positions_identical": self.positions_identical, "passed": self.passed,
                "cases": [asdict(c) for c in self.cases]}


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
                 tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
                 session: ort.InferenceSession | None = None) -> ParityReport:
    """Run both on the same random inputs for each (batch, seq_len); compare the task's outputs and kept positions.

    Kept positions are compared only when the ONNX graph exposes them as outputs. Per-position outputs (question
    answering's start and end logits) are compared at real positions only: a padding slot's logit is never read.
    """
    session = session or make_session(onnx_path)
    names = [o.name for o in session.get_outputs()]
    generator = np.random.default_rng(seed)
    report = ParityReport(tolerance)
    reference_module = TopMInference(module.model, module.schedule, with_positions=True,
                                     keep_order=module.keep_order, scorer=module.scorer).eval()
    task_outputs = module.io_spec.outputs
    for batch, seq_len in shapes:
        feeds = dummy_inputs(batch, seq_len, vocab, generator, names=[i.name for i in session.get_inputs()],
                             segments=module.model.config.is_question_answering)
        got = dict(zip(names, session.run(names, feeds), strict=True))
        expected = reference_module(*(torch.from_numpy(v) for v in feeds.values()))
        want = dict(zip(reference_module.output_names, (t.numpy() for t in expected), strict=True))
        diff = max(max_abs_diff(got[n], want[n], feeds[ATTENTION_MASK]) for n in task_outputs)
        same = all(np.array_equal(got[n], want[n]) for n in names if n not in task_outputs)
        report.cases.append(ParityCase(batch, seq_len, diff, same))
    return report

