"""fp32 vs INT8 on labelled text: accuracy, prediction agreement and token-selection agreement (flip rate).

Token selection is compared through the ``kept_positions_l<n>`` outputs of ``--with-positions`` exports: per
example and pruned layer, the share of the real positions fp32 keeps that INT8 keeps too. The flip rate is
one minus that share, over all kept real positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from adaret.calibration.reader import encode_planned

POSITIONS_PREFIX = "kept_positions_l"


@dataclass
class Agreement:
    examples: int
    accuracy_fp32: float
    accuracy_int8: float
    prediction_agreement: float
    kept_positions: int  # real positions fp32 keeps, summed over examples and pruned layers
    token_agreement: float | None  # None when the graphs have no kept_positions outputs
    max_abs_logit_diff: float

    @property
    def accuracy_ratio(self) -> float:
        return self.accuracy_int8 / self.accuracy_fp32 if self.accuracy_fp32 else float("nan")

    @property
    def flip_rate(self) -> float | None:
        return None if self.token_agreement is None else 1.0 - self.token_agreement

    def as_dict(self) -> dict:
        return asdict(self) | {"accuracy_ratio": self.accuracy_ratio, "flip_rate": self.flip_rate}


def session_with_outputs(model, extra: Sequence[str]):
    """A CPU session of ``model`` (a ModelProto, left untouched) that also returns the tensors ``extra``."""
    import onnx

    from adaret.core.ort_sessions import make_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in extra if n not in present)
    return make_session(probe)


def session(path: str | Path, threads: int | None = None):
    from adaret.core.ort_sessions import make_session

    return make_session(Path(path), threads=threads)


def compare(fp32: str | Path, int8: str | Path, texts: Sequence[str], labels: Sequence[int], tokenizer, *,
            max_length: int = 512, batch_size: int = 8, seq_len: int | None = None) -> Agreement:
    ref, cand = session(fp32), session(int8)
    names = [o.name for o in ref.get_outputs()]
    position_names = [n for n in names if n.startswith(POSITIONS_PREFIX)
                      and n in {o.name for o in cand.get_outputs()}]
    inputs = {i.name for i in ref.get_inputs()}
    pred_ref, pred_cand = [0] * len(texts), [0] * len(texts)
    max_diff, kept, shared = 0.0, 0, 0
    for indices, feeds in encode_planned(texts, tokenizer, batch_size=batch_size, max_length=max_length,
                                         seq_len=seq_len):
        feeds = {name: value for name, value in feeds.items() if name in inputs}
        out_ref = dict(zip(names, ref.run(names, feeds), strict=True))
        out_cand = dict(zip(names, cand.run(names, feeds), strict=True))
        for index, a, b in zip(indices, out_ref["logits"].argmax(-1), out_cand["logits"].argmax(-1), strict=True):
            pred_ref[index], pred_cand[index] = int(a), int(b)
        max_diff = max(max_diff, float(np.abs(out_ref["logits"] - out_cand["logits"]).max()))
        lengths = feeds["attention_mask"].sum(1)
        for name in position_names:
            k, s = overlap(out_ref[name], out_cand[name], lengths)
            kept, shared = kept + k, shared + s
    labels = list(labels)[:len(pred_ref)]
    n = len(pred_ref)
    return Agreement(
        examples=n,
        accuracy_fp32=sum(p == y for p, y in zip(pred_ref, labels, strict=True)) / n,
        accuracy_int8=sum(p == y for p, y in zip(pred_cand, labels, strict=True)) / n,
        prediction_agreement=sum(a == b for a, b in zip(pred_ref, pred_cand, strict=True)) / n,
        kept_positions=kept, token_agreement=(shared / kept) if position_names and kept else None,
        max_abs_logit_diff=max_diff)


def overlap(ref: np.ndarray, cand: np.ndarray, lengths: np.ndarray) -> tuple[int, int]:
    """Real positions kept by fp32, and how many of those INT8 kept as well (padding slots do not count)."""
    kept = shared = 0
    for row, length in enumerate(lengths):
        a = {int(p) for p in ref[row] if p < length}
        b = {int(p) for p in cand[row] if p < length}
        kept += len(a)
        shared += len(a & b)
    return kept, shared
