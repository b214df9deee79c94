"""Calibration batches over real task data, tokenised with the checkpoint's tokenizer and padded exactly as the
runtime pads them when it serves (``adaret.core.padding``).

K_l follows the padded length, so calibrating or measuring agreement under any other padding would look at token
choices the deployment never makes. One interface, ``CalibrationSet``, covers both tasks, and the export's
``adaret.task`` picks the implementation (``calibration_set``):

- ``TextSet``: classification texts, each truncated and padded to its own bucket width;
- ``QaSet``: SQuAD questions cut into windows with the export's recorded settings (``adaret.question_answering``),
  as ``adaret.runtime`` cuts them, each window padded to its own bucket width.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader
from tqdm.auto import tqdm

from adaret.calibration.data import QuestionSet
from adaret.calibration.int8.record import texts_sha256
from adaret.core.errors import AdaretError
from adaret.core.io_spec import INPUT_NAMES, QUESTION_ANSWERING
from adaret.core.metadata import ExportMetadata
from adaret.core.padding import PlannedBatch, bucket_widths, padded_batches, plan_batches, smallest_width
from adaret.core.qa_windows import QaWindows, make_windows
from adaret.core.squad import SquadExample
from adaret.training.data import TextDataset

# The runtime's limit for a dynamic graph whose metadata records no position table (adaret.runtime.session)
FALLBACK_MAX_LENGTH = 512

Batch = tuple[list[int], dict[str, np.ndarray]]  # (rows of the set in this batch, int64 feeds)


def encode_planned(texts: Sequence[str], tokenizer, *, batch_size: int, max_length: int,
                   seq_len: int | None = None) -> Iterator[Batch]:
    """(indices of the texts, int64 feeds) per batch: to ``seq_len`` for a static graph, else each text to its own
    bucket width."""
    yield from TextSet(texts, [], tokenizer, batch_size=batch_size, max_length=max_length, seq_len=seq_len).planned()


def encode_batches(texts: Sequence[str], tokenizer, *, batch_size: int, max_length: int,
                   seq_len: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """The feeds of ``encode_planned``, for uses where the order of texts does not matter (calibration)."""
    for _, feeds in encode_planned(texts, tokenizer, batch_size=batch_size, max_length=max_length, seq_len=seq_len):
        yield feeds


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


class CalibrationSet(ABC):
    """One task's calibration examples as feeds. A row of a batch is a text, or a window of a question."""

    task: str
    batch_size: int

    @abstractmethod
    def __len__(self) -> int:
        """Examples: texts, or questions."""

    @abstractmethod
    def head(self, count: int) -> CalibrationSet:
        """The first ``count`` examples, encoded the same way."""

    @abstractmethod
    def planned(self) -> Iterator[Batch]:
        """(rows, feeds) per batch, padded as the runtime pads them."""

    @abstractmethod
    def fixed_length(self) -> list[dict[str, np.ndarray]]:
        """Every batch padded to the longest width (ModelOpt stacks its calibration arrays)."""

    @abstractmethod
    def example_of_rows(self, rows: Sequence[int]) -> list[int]:
        """The example each row belongs to: token flips cluster within an example, not within a row."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the calibration record says about the data, besides dataset, split, seed and batch size."""

    @abstractmethod
    def agreement(self, fp32: Any, int8: Any) -> Any:
        """fp32 vs INT8 on these examples (``adaret.calibration.int8.verify``)."""

    @property
    @abstractmethod
    def num_batches(self) -> int:
        """Batches ``planned`` yields (the progress bar's total)."""

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        for _, feeds in self.planned():
            yield feeds


class TextSet(CalibrationSet):
    """Classification texts: each truncated to ``seq_len`` or ``max_length`` and padded to its bucket width."""

    task = "sequence-classification"

    def __init__(self, texts: Sequence[str], labels: Sequence[int], tokenizer, *, batch_size: int,
                 max_length: int, seq_len: int | None = None):
        self.texts, self.labels, self.tokenizer = list(texts), list(labels), tokenizer
        self.batch_size, self.max_length, self.seq_len = batch_size, max_length, seq_len

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, count: int) -> TextSet:
        return TextSet(self.texts[:count], self.labels[:count], self.tokenizer, batch_size=self.batch_size,
                       max_length=self.max_length, seq_len=self.seq_len)

    @cached_property
    def ids(self) -> list[list[int]]:
        """Each text's token ids, truncated to ``seq_len`` or ``max_length``: tokenised once, padded per pass."""
        return self.tokenizer(self.texts, truncation=True, max_length=self.seq_len or self.max_length)["input_ids"]

    @property
    def widths(self) -> list[int]:
        return [self.seq_len] if self.seq_len else bucket_widths(self.max_length)

    @property
    def num_batches(self) -> int:
        return len(plan_batches([len(row) for row in self.ids], self.widths, self.batch_size))

    def planned(self) -> Iterator[Batch]:
        for batch, feeds in padded_batches(self.ids, self.widths, self.batch_size, _pad_id(self.tokenizer)):
            yield batch.indices, feeds

    def fixed_length(self) -> list[dict[str, np.ndarray]]:
        width = self.seq_len or self.max_length
        return [feeds for _, feeds in padded_batches(self.ids, [width], self.batch_size, _pad_id(self.tokenizer))]

    def example_of_rows(self, rows: Sequence[int]) -> list[int]:
        return list(rows)

    def describe(self) -> dict[str, Any]:
        return {"samples": len(self), "max_length": self.seq_len or self.max_length,
                "texts_sha256": texts_sha256(self.texts)}

    def agreement(self, fp32: Any, int8: Any) -> Any:
        from adaret.calibration.int8.verify import compare_labels

        return compare_labels(fp32, int8, self)


class QaSet(CalibrationSet):
    """SQuAD questions, cut into windows with the export's settings; each window is padded to the smallest of
    ``widths`` that holds it (``adaret.runtime.qa`` runs windows through ``plan_batches`` the same way)."""

    task = QUESTION_ANSWERING.task

    def __init__(self, examples: Sequence[SquadExample], tokenizer, settings: dict[str, int], *, batch_size: int,
                 widths: Sequence[int]):
        self.examples, self.tokenizer, self.settings = list(examples), tokenizer, dict(settings)
        self.batch_size, self.widths = batch_size, sorted(widths)
        # The runtime cuts windows no longer than its longest input, which for a static graph is its bucket
        self.window_length = min(self.settings["max_length"], self.widths[-1])

    @classmethod
    def for_export(cls, meta: ExportMetadata, examples: Sequence[SquadExample], tokenizer, *, batch_size: int,
                   max_length: int | None = None) -> QaSet:
        """The windows and bucket widths ``adaret.runtime.load(graph, max_length=max_length)`` would use."""
        if meta.question_answering is None:
            raise AdaretError(f"the graph is a {meta.task} export; question-answering calibration needs a "
                              "question-answering export")
        return cls(examples, tokenizer, meta.question_answering, batch_size=batch_size,
                   widths=runtime_widths(meta, max_length))

    def __len__(self) -> int:
        return len(self.examples)

    def head(self, count: int) -> QaSet:
        return QaSet(self.examples[:count], self.tokenizer, self.settings, batch_size=self.batch_size,
                     widths=self.widths)

    @cached_property
    def windows(self) -> QaWindows:
        return make_windows(self.tokenizer, [e.question for e in self.examples], [e.context for e in self.examples],
                            max_length=self.window_length, doc_stride=self.settings["doc_stride"],
                            max_query_length=self.settings["max_query_length"], pad_id=_pad_id(self.tokenizer))

    @cached_property
    def plan(self) -> list[PlannedBatch]:
        return plan_batches(self.windows.lengths, self.widths, self.batch_size)

    @property
    def num_batches(self) -> int:
        return len(self.plan)

    def planned(self) -> Iterator[Batch]:
        for batch in self.plan:
            yield batch.indices, self.windows.pad(batch.width, batch.indices)

    def fixed_length(self) -> list[dict[str, np.ndarray]]:
        width = smallest_width(self.widths, self.window_length)  # the bucket of the longest possible window
        return [self.windows.pad(width, batch.indices) for batch in self.plan]

    def example_of_rows(self, rows: Sequence[int]) -> list[int]:
        return [int(self.windows.example_index[row]) for row in rows]

    def describe(self) -> dict[str, Any]:
        return {"samples": len(self), "windows": len(self.windows), "max_length": self.window_length,
                "question_answering": self.settings,
                "texts_sha256": texts_sha256([f"{e.id}\n{e.question}\n{e.context}" for e in self.examples])}

    def agreement(self, fp32: Any, int8: Any) -> Any:
        from adaret.calibration.int8.verify import compare_spans

        return compare_spans(fp32, int8, self)


def runtime_widths(meta: ExportMetadata, max_length: int | None = None) -> list[int]:
    """The bucket widths the runtime serves one graph with: a static graph's length, else multiples of the padding
    step up to its position table (``max_length`` may only lower that, as ``adaret.runtime.load`` allows)."""
    if meta.seq_len:
        return [meta.seq_len]
    limit = meta.max_positions or FALLBACK_MAX_LENGTH
    return bucket_widths(min(max_length, limit) if max_length else limit)


def calibration_set(meta: ExportMetadata, data: TextDataset | QuestionSet, tokenizer, *, batch_size: int,
                    max_length: int, seq_len: int | None = None) -> CalibrationSet:
    """The encoding of ``data`` for an export of ``meta.task``. ``max_length`` is the tokens per text for
    classification (the checkpoint's training length) and the runtime's length cap for question answering."""
    if meta.task == QUESTION_ANSWERING.task:
        if not isinstance(data, QuestionSet):
            raise AdaretError("a question-answering export calibrates on SQuAD questions (--data squad or a "
                              "SQuAD-format JSON file)")
        return QaSet.for_export(meta, data.examples, tokenizer, batch_size=batch_size, max_length=max_length)
    if not isinstance(data, TextDataset):
        raise AdaretError(f"a {meta.task} export calibrates on labelled texts, not SQuAD questions")
    return TextSet(data.texts, data.labels, tokenizer, batch_size=batch_size, max_length=max_length, seq_len=seq_len)


class CalibrationReader(CalibrationDataReader):
    """Feeds ORT's calibrator one batch of ``data`` per ``get_next``, with a progress bar over the batches."""

    def __init__(self, data: CalibrationSet, *, input_names: Sequence[str] = INPUT_NAMES, progress: bool = True,
                 desc: str = "calibration batches"):
        self.data, self.input_names = data, tuple(input_names)
        self.progress, self.desc = progress, desc
        self.rewind()

    @property
    def num_batches(self) -> int:
        return self.data.num_batches

    def rewind(self) -> None:
        self._batches = self.data.batches()
        self._bar = tqdm(total=self.num_batches, desc=self.desc, unit="batch", leave=False, disable=not self.progress)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feeds = next(self._batches, None)
        if feeds is None:
            self._bar.close()
            return None
        self._bar.update(1)
        return {name: feeds[name] for name in self.input_names}

    def __len__(self) -> int:
        return self.num_batches
