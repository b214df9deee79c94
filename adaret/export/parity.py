"""ONNX Runtime against the PyTorch hard top-M reference on fresh random inputs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from adaret.export.inference import TopMInference

# fp32 logits through ~6 layers of MatMul/Softmax/LayerNorm: ORT's kernels reorder sums, so results differ
# at ~1e-6 relative to the activations; 1e-4 absolute leaves two orders of magnitude of margin while still
# catching any wrong token choice or a missed mask, which move logits by 1e-2 or more.
DEFAULT_TOLERANCE = 1e-4


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


def random_inputs(batch: int, seq_len: int, vocab_size: int, generator: np.random.Generator,
                  cls_id: int = 101, sep_id: int = 102) -> dict[str, np.ndarray]:
    """Random tokens with CLS first, SEP last, and a random amount of right padding per row."""
    ids = generator.integers(1000, vocab_size, size=(batch, seq_len), dtype=np.int64)
    lengths = generator.integers(2, seq_len + 1, size=batch)
    lengths[generator.integers(0, batch)] = seq_len  # at least one unpadded row
    mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
    ids[:, 0] = cls_id
    ids[np.arange(batch), lengths - 1] = sep_id
    ids = np.where(mask == 1, ids, 0)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def make_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_parity(module: TopMInference, onnx_path: Path, shapes: Sequence[tuple[int, int]], *,
                 tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
                 session: ort.InferenceSession | None = None) -> ParityReport:
    """Run both on the same random inputs for each (batch, seq_len); compare logits and kept positions.

    Kept positions are compared only when the ONNX graph exposes them as outputs.
    """
    session = session or make_session(onnx_path)
    names = [o.name for o in session.get_outputs()]
    vocab = module.model.encoder.config.vocab_size
    generator = np.random.default_rng(seed)
    report = ParityReport(tolerance)
    reference_module = TopMInference(module.model, module.schedule, with_positions=True,
                                     keep_order=module.keep_order, scorer=module.scorer).eval()
    for batch, seq_len in shapes:
        feeds = random_inputs(batch, seq_len, vocab, generator)
        feeds = {i.name: feeds[i.name] for i in session.get_inputs()}
        got = dict(zip(names, session.run(names, feeds), strict=True))
        expected = reference_module(*(torch.from_numpy(v) for v in feeds.values()))
        want = dict(zip(reference_module.output_names, (t.numpy() for t in expected), strict=True))
        diff = float(np.abs(got["logits"] - want["logits"]).max())
        same = all(np.array_equal(got[n], want[n]) for n in names if n != "logits")
        report.cases.append(ParityCase(batch, seq_len, diff, same))
    return report
