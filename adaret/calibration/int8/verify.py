"""fp32 vs INT8 on task data: the prediction's agreement and accuracy, and token-selection agreement (flip rate).

- classification (``compare``): the predicted label, accuracy against the labels, the largest logit difference;
- question answering (``compare_answers``): the prediction is each question's best span decoded over its windows
  (``adaret.core.qa_windows.best_spans``, as the runtime decodes it); span agreement is the share of questions whose
  answer text is the same in fp32 and INT8, EM/F1 score both against the gold answers (official SQuAD v1.1), and
  the logit difference is the largest over start and end logits at real positions (padding logits are never read).

Token selection is compared through the ``kept_positions_l<n>`` outputs of ``--with-positions`` exports: per row (a
text or a window) and pruned layer, the share of the real positions fp32 keeps that INT8 keeps too. The flip rate
is one minus that share, over all kept real positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from adaret.calibration.int8.reader import QaSet, TextSet
from adaret.core.io_spec import END_LOGITS, LOGITS, START_LOGITS
from adaret.core.metadata import ExportMetadata
from adaret.core.qa_windows import best_spans
from adaret.core.squad import SquadExample, squad_metrics

if TYPE_CHECKING:
    import onnx

    Model = str | Path | onnx.ModelProto

POSITIONS_PREFIX = "kept_positions_l"


# Keyword-only: each task's own fields keep their places in its constructor, these follow by name.
@dataclass(kw_only=True)
class TokenAgreement:
    """What fp32 vs INT8 shares across tasks: the token selection and the largest logit difference."""

    kept_positions: int  # real positions fp32 keeps, summed over rows (texts or windows) and pruned layers
    token_agreement: float | None  # None when the graphs have no kept_positions outputs
    max_abs_logit_diff: float  # question answering: over start and end logits, at real positions

    @property
    def flip_rate(self) -> float | None:
        return None if self.token_agreement is None else 1.0 - self.token_agreement

    def as_dict(self) -> dict:
        return asdict(self) | {"flip_rate": self.flip_rate}


@dataclass
class Agreement(TokenAgreement):
    examples: int
    accuracy_fp32: float
    accuracy_int8: float
    prediction_agreement: float

    @property
    def accuracy_ratio(self) -> float:
        return self.accuracy_int8 / self.accuracy_fp32 if self.accuracy_fp32 else float("nan")

    def as_dict(self) -> dict:
        return super().as_dict() | {"accuracy_ratio": self.accuracy_ratio}

    def summary(self) -> str:
        return (f"prediction agreement {self.prediction_agreement:.4f} on {self.examples} texts; accuracy fp32 "
                f"{self.accuracy_fp32:.4f}, INT8 {self.accuracy_int8:.4f}{_tokens(self.token_agreement)}; max "
                f"|logit diff| {self.max_abs_logit_diff:.3g}")


@dataclass
class SpanAgreement(TokenAgreement):
    """fp32 vs INT8 question answering; EM and F1 are percentages, as the official SQuAD script reports them."""

    questions: int
    windows: int
    span_agreement: float  # questions whose best answer text is the same in fp32 and INT8
    exact_match_fp32: float
    f1_fp32: float
    exact_match_int8: float
    f1_int8: float

    def summary(self) -> str:
        return (f"span agreement {self.span_agreement:.4f} on {self.questions} questions; EM/F1 fp32 "
                f"{self.exact_match_fp32:.1f}/{self.f1_fp32:.1f}, INT8 {self.exact_match_int8:.1f}/"
                f"{self.f1_int8:.1f}{_tokens(self.token_agreement)}; max |start/end logit diff| "
                f"{self.max_abs_logit_diff:.3g}")


def _tokens(agreement: float | None) -> str:
    return "" if agreement is None else f"; token agreement {agreement:.4f}"


def session_with_outputs(model, extra: Sequence[str]):
    """A CPU session of ``model`` (a ModelProto, left untouched) that also returns the tensors ``extra``."""
    import onnx

    from adaret.core.ort_sessions import make_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in extra if n not in present)
    return make_session(probe)


def session(model: Model, threads: int | None = None):
    """A CPU session of a graph file or a ModelProto."""
    from adaret.core.ort_sessions import make_session

    return make_session(Path(model) if isinstance(model, str | Path) else model, threads=threads)


class _Pair:
    """The fp32 and INT8 graphs run on the same feeds, counting the real positions both keep."""

    def __init__(self, fp32: Model, int8: Model):
        self.ref, self.cand = session(fp32), session(int8)
        self.names = [o.name for o in self.ref.get_outputs()]
        candidate = {o.name for o in self.cand.get_outputs()}
        self.position_names = [n for n in self.names if n.startswith(POSITIONS_PREFIX) and n in candidate]
        self.inputs = {i.name for i in self.ref.get_inputs()}
        self.kept = self.shared = 0

    def run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        feeds = {name: value for name, value in feeds.items() if name in self.inputs}
        out_ref = dict(zip(self.names, self.ref.run(self.names, feeds), strict=True))
        out_cand = dict(zip(self.names, self.cand.run(self.names, feeds), strict=True))
        lengths = feeds["attention_mask"].sum(1)
        for name in self.position_names:
            k, s = overlap(out_ref[name], out_cand[name], lengths)
            self.kept, self.shared = self.kept + k, self.shared + s
        return out_ref, out_cand

    @property
    def token_agreement(self) -> float | None:
        return (self.shared / self.kept) if self.position_names and self.kept else None


def compare(fp32: Model, int8: Model, texts: Sequence[str], labels: Sequence[int], tokenizer, *,
            max_length: int = 512, batch_size: int = 8, seq_len: int | None = None) -> Agreement:
    return compare_labels(fp32, int8, TextSet(texts, labels, tokenizer, batch_size=batch_size,
                                              max_length=max_length, seq_len=seq_len))


def compare_labels(fp32: Model, int8: Model, data: TextSet) -> Agreement:
    """``compare`` on texts already encoded (a calibration set)."""
    pair = _Pair(fp32, int8)
    pred_ref, pred_cand = [0] * len(data), [0] * len(data)
    max_diff = 0.0
    for indices, feeds in data.planned():
        out_ref, out_cand = pair.run(feeds)
        for index, a, b in zip(indices, out_ref[LOGITS].argmax(-1), out_cand[LOGITS].argmax(-1), strict=True):
            pred_ref[index], pred_cand[index] = int(a), int(b)
        max_diff = max(max_diff, float(np.abs(out_ref[LOGITS] - out_cand[LOGITS]).max()))
    labels = data.labels[:len(pred_ref)]
    n = len(pred_ref)
    return Agreement(
        examples=n,
        accuracy_fp32=sum(p == y for p, y in zip(pred_ref, labels, strict=True)) / n,
        accuracy_int8=sum(p == y for p, y in zip(pred_cand, labels, strict=True)) / n,
        prediction_agreement=sum(a == b for a, b in zip(pred_ref, pred_cand, strict=True)) / n,
        kept_positions=pair.kept, token_agreement=pair.token_agreement, max_abs_logit_diff=max_diff)


def compare_answers(fp32: Model, int8: Model, examples: Sequence[SquadExample], tokenizer, *, batch_size: int = 8,
                    max_length: int | None = None) -> SpanAgreement:
    """fp32 vs INT8 on SQuAD questions, windowed and padded as ``adaret.runtime.load(fp32, max_length=...)`` would
    serve them (the window settings come from the fp32 graph's metadata)."""
    return compare_spans(fp32, int8, QaSet.for_export(_metadata(fp32), examples, tokenizer, batch_size=batch_size,
                                                      max_length=max_length))


def compare_spans(fp32: Model, int8: Model, data: QaSet) -> SpanAgreement:
    """``compare_answers`` on questions already encoded (a calibration set)."""
    pair = _Pair(fp32, int8)
    count = len(data.windows)
    ref: tuple[list[Any], list[Any]] = ([None] * count, [None] * count)
    cand: tuple[list[Any], list[Any]] = ([None] * count, [None] * count)
    max_diff = 0.0
    for rows, feeds in data.planned():
        out_ref, out_cand = pair.run(feeds)
        real = feeds["attention_mask"] == 1
        for side, name in enumerate((START_LOGITS, END_LOGITS)):
            max_diff = max(max_diff, float(np.abs(out_ref[name] - out_cand[name])[real].max()))
            for row, window in enumerate(rows):
                ref[side][window], cand[side][window] = out_ref[name][row], out_cand[name][row]
    answers_ref, answers_cand = _answers(ref, data), _answers(cand, data)
    scores_ref, scores_cand = squad_metrics(answers_ref, data.examples), squad_metrics(answers_cand, data.examples)
    return SpanAgreement(
        questions=len(data.examples), windows=count,
        span_agreement=sum(answers_ref[k] == answers_cand[k] for k in answers_ref) / len(answers_ref),
        exact_match_fp32=scores_ref["exact_match"], f1_fp32=scores_ref["f1"],
        exact_match_int8=scores_cand["exact_match"], f1_int8=scores_cand["f1"],
        kept_positions=pair.kept, token_agreement=pair.token_agreement, max_abs_logit_diff=max_diff)


def _answers(logits: tuple[list[Any], list[Any]], data: QaSet) -> dict[str, str]:
    """Each question's best answer text, by question id, decoded over its windows as the runtime decodes it."""
    spans = best_spans(*logits, data.windows, [e.context for e in data.examples],
                       max_answer_length=data.settings["max_answer_length"])
    return {e.id: found[0].text for e, found in zip(data.examples, spans, strict=True)}


def _metadata(model: Model) -> ExportMetadata:
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return ExportMetadata.from_model(model)


def overlap(ref: np.ndarray, cand: np.ndarray, lengths: np.ndarray) -> tuple[int, int]:
    """Real positions kept by fp32, and how many of those INT8 kept as well (padding slots do not count)."""
    kept = shared = 0
    for row, length in enumerate(lengths):
        a = {int(p) for p in ref[row] if p < length}
        b = {int(p) for p in cand[row] if p < length}
        kept += len(a)
        shared += len(a & b)
    return kept, shared
