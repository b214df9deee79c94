"""Extractive question answering without torch: a question and its context cut into model windows, and the
start/end logits of those windows read back into answer spans.

This is the preprocessing and post-processing of Hugging Face's ``run_qa.py`` (SQuAD v1.1), shared by training,
the runtime and validation so that all three see the same windows:

- the question is cut to ``max_query_length`` tokens; the tokenizer's own pair template frames it with the
  context (``[CLS] question [SEP] context [SEP]`` with token types 0/1 for BERT); a context too long for one window
  is cut by the ``tokenizers`` truncation (only the second sequence) into windows that overlap by ``doc_stride``
  tokens;
- a training answer maps to the first and last context token that cover it, or to 0/0 (the first token, [CLS])
  in a window that does not hold all of it;
- decoding takes the ``n_best`` highest start and end logits of each window, keeps the pairs that lie in the
  context, in order, and at most ``max_answer_length`` tokens long, scores each by start + end logit, and ranks
  them over all windows of the example.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from adaret.core.errors import AdaretError
from adaret.core.io_spec import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS

_PAD_TOKENS = ("[PAD]", "<pad>")
NO_OFFSET = -1  # the offset of a question or special token: not part of the context


@dataclass(frozen=True)
class Span:
    """One answer: the context's characters ``start_char:end_char`` and the start + end logit that chose them."""

    text: str
    score: float
    start_char: int
    end_char: int


@dataclass
class QaWindows:
    """The model windows of a list of (question, context) pairs, one row per window in example order.

    ``offsets[w]`` is an int64 ``[tokens, 2]`` array of each token's character span in its context, ``NO_OFFSET``
    for question and special tokens. ``start_positions``/``end_positions`` are the answer's token positions
    (0/0: not in this window), present when answers were given.
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    offsets: list[np.ndarray]
    example_index: np.ndarray
    example_count: int
    pad_id: int = 0
    start_positions: np.ndarray | None = None
    end_positions: np.ndarray | None = None
    _by_example: list[np.ndarray] = field(default_factory=list, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def windows_of(self, example: int) -> np.ndarray:
        """The indices of one example's windows, in context order."""
        if not self._by_example:
            order = np.argsort(self.example_index, kind="stable")
            cuts = np.searchsorted(self.example_index[order], np.arange(self.example_count + 1))
            self._by_example = [order[a:b] for a, b in itertools.pairwise(cuts)]
        return self._by_example[example]

    def pad(self, width: int, indices: Sequence[int] | None = None, pad_id: int | None = None) -> dict[str, np.ndarray]:
        """int64 ``input_ids``, ``attention_mask`` and ``token_type_ids`` of shape [windows, width], right-padded
        with ``pad_id`` (default: the tokenizer's), for all windows or the ``indices`` given."""
        rows = range(len(self)) if indices is None else [int(i) for i in indices]
        ids = np.full((len(rows), width), self.pad_id if pad_id is None else pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for row, window in enumerate(rows):
            length = len(self.input_ids[window])
            if length > width:
                raise AdaretError(f"window {window} has {length} tokens, more than the padded width {width}")
            ids[row, :length] = self.input_ids[window]
            mask[row, :length] = 1
            types[row, :length] = self.token_type_ids[window]
        return {INPUT_IDS: ids, ATTENTION_MASK: mask, TOKEN_TYPE_IDS: types}


# --- windows -------------------------------------------------------------------------------------------------


def make_windows(tokenizer: Tokenizer, questions: Sequence[str], contexts: Sequence[str], *, max_length: int = 384,
                 doc_stride: int = 128, max_query_length: int = 64, answers: Sequence[Any] | None = None,
                 pad_id: int | None = None) -> QaWindows:
    """Cut each (question, context) pair into windows of at most ``max_length`` tokens.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` (or a transformers fast tokenizer: its backend is used); its
    truncation and padding settings are restored afterwards. ``answers``, for training, gives per example a
    ``SquadAnswer`` (anything with ``text`` and ``start``), a sequence of them (the first is used) or None.
    """
    tokenizer = getattr(tokenizer, "backend_tokenizer", tokenizer)
    questions, contexts = _checked_pairs(questions, contexts)
    _check_settings(tokenizer, max_length, doc_stride, max_query_length)
    spans = None if answers is None else _answer_spans(answers, len(contexts))
    with _plain(tokenizer):
        questions = _cut_questions(tokenizer, questions, max_query_length)
        tokenizer.enable_truncation(max_length, stride=doc_stride, strategy="only_second")
        encodings = _tokenizer_call(tokenizer.encode_batch, list(zip(questions, contexts, strict=True)))
    windows = _collect(encodings, _pad_id(tokenizer, pad_id))
    if spans is not None:
        windows.start_positions, windows.end_positions = _positions(windows, spans)
    return windows


def _checked_pairs(questions: Sequence[str], contexts: Sequence[str]) -> tuple[list[str], list[str]]:
    if isinstance(questions, str) or isinstance(contexts, str):
        raise AdaretError("questions and contexts must be lists of strings; wrap a single one in a list")
    questions, contexts = list(questions), list(contexts)
    if len(questions) != len(contexts):
        raise AdaretError(f"got {len(questions)} question(s) but {len(contexts)} context(s); pair each question "
                          "with its context")
    if not questions:
        raise AdaretError("no questions to answer")
    for name, texts in (("questions", questions), ("contexts", contexts)):
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise AdaretError(f"{name}[{index}] is a {type(text).__name__}, not a string")
            if not text.strip():
                raise AdaretError(f"{name}[{index}] is empty")
    return [q.lstrip() for q in questions], contexts  # leading blanks would be tokens to some tokenizers


def _check_settings(tokenizer: Tokenizer, max_length: int, doc_stride: int, max_query_length: int) -> None:
    for name, value in (("max_length", max_length), ("doc_stride", doc_stride),
                        ("max_query_length", max_query_length)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise AdaretError(f"{name} must be a positive integer, got {value!r}")
    processor = tokenizer.post_processor
    specials = processor.num_special_tokens_to_add(True) if processor is not None else 0
    room = max_length - max_query_length - specials  # context tokens per window, whatever the question
    if room <= doc_stride:
        raise AdaretError(f"max_length {max_length} leaves {room} context token(s) per window after a question of "
                          f"up to {max_query_length} tokens and {specials} special tokens; doc_stride "
                          f"{doc_stride} must be smaller than that")


@contextlib.contextmanager
def _plain(tokenizer: Tokenizer) -> Iterator[None]:
    """No padding while windowing (the buckets pad), and the caller's settings back afterwards."""
    truncation, padding = tokenizer.truncation, tokenizer.padding
    tokenizer.no_padding()
    tokenizer.no_truncation()
    try:
        yield
    finally:
        tokenizer.no_truncation()
        if truncation:
            tokenizer.enable_truncation(**truncation)
        if padding:
            tokenizer.enable_padding(**padding)


def _cut_questions(tokenizer: Tokenizer, questions: list[str], limit: int) -> list[str]:
    """Each question cut, at a token boundary, to at most ``limit`` tokens.

    The text is cut rather than the token list: a truncated question encoding would carry its cut-off tokens as
    overflow, and the pair encoding would cross them with every context window.
    """
    encodings = _tokenizer_call(tokenizer.encode_batch, questions, add_special_tokens=False)
    cut = []
    for index, (text, encoding) in enumerate(zip(questions, encodings, strict=True)):
        if not encoding.ids:
            raise AdaretError(f"questions[{index}] has no tokens (only blanks or control characters)")
        while len(encoding.ids) > limit:
            end = encoding.offsets[limit - 1][1]
            text = text[:end] if end < len(text) else text[:-1]  # several tokens of one character: drop it
            encoding = _tokenizer_call(tokenizer.encode, text, add_special_tokens=False)
        cut.append(text)
    return cut


def _tokenizer_call(method: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return method(*args, **kwargs)
    except Exception as exc:  # tokenizers raises a bare Exception
        raise AdaretError(f"the tokenizer failed: {' '.join(str(exc).split())[:300]}") from None


def _collect(encodings: list[Any], pad_id: int) -> QaWindows:
    ids, types, offsets, examples = [], [], [], []
    for example, encoding in enumerate(encodings):
        for window in (encoding, *encoding.overflowing):
            sequence = window.sequence_ids
            if 1 not in sequence:
                raise AdaretError(f"contexts[{example}] has no tokens (only blanks or control characters)")
            first, last = sequence.index(1), len(sequence) - 1 - sequence[::-1].index(1)
            where = np.full((len(sequence), 2), NO_OFFSET, dtype=np.int64)
            where[first:last + 1] = window.offsets[first:last + 1]  # the pair template keeps the context in one run
            ids.append(window.ids)
            types.append(window.type_ids)
            offsets.append(where)
            examples.append(example)
    return QaWindows(ids, types, offsets, np.asarray(examples, dtype=np.int64), len(encodings), pad_id)


def _pad_id(tokenizer: Tokenizer, pad_id: int | None) -> int:
    if pad_id is not None:
        return int(pad_id)
    if tokenizer.padding:
        return int(tokenizer.padding["pad_id"])
    return next((found for token in _PAD_TOKENS if (found := tokenizer.token_to_id(token)) is not None), 0)


def _answer_spans(answers: Sequence[Any], count: int) -> list[tuple[int, int] | None]:
    """Each example's first answer as a character span [start, end), or None."""
    answers = list(answers)
    if len(answers) != count:
        raise AdaretError(f"got answers for {len(answers)} example(s) but {count} context(s)")
    spans: list[tuple[int, int] | None] = []
    for index, answer in enumerate(answers):
        if answer is not None and not hasattr(answer, "text"):
            answer = next(iter(answer), None)
        if answer is None:
            spans.append(None)
        elif isinstance(getattr(answer, "text", None), str) and isinstance(getattr(answer, "start", None), int):
            spans.append((answer.start, answer.start + len(answer.text)))
        else:
            raise AdaretError(f"answers[{index}] must be a SquadAnswer (text and start), a list of them, or None")
    return spans


def _positions(windows: QaWindows, spans: list[tuple[int, int] | None]) -> tuple[np.ndarray, np.ndarray]:
    starts = np.zeros(len(windows), dtype=np.int64)
    ends = np.zeros(len(windows), dtype=np.int64)
    for window, (example, offsets) in enumerate(zip(windows.example_index, windows.offsets, strict=True)):
        span = spans[example]
        if span is not None:
            starts[window], ends[window] = _answer_tokens(offsets, *span)
    return starts, ends


def _answer_tokens(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int]:
    """The first and last context token covering [start_char, end_char), or 0/0 when the window does not hold
    all of it (run_qa's rule)."""
    context = np.flatnonzero(offsets[:, 0] != NO_OFFSET)
    first, last = context[0], context[-1]
    if offsets[first, 0] > start_char or offsets[last, 1] < end_char:
        return 0, 0
    start = first + np.flatnonzero(offsets[first:last + 1, 0] <= start_char)[-1]
    end = first + np.flatnonzero(offsets[first:last + 1, 1] >= end_char)[0]
    return int(start), int(end)


# --- spans ---------------------------------------------------------------------------------------------------


def best_spans(start_logits: Sequence[np.ndarray] | np.ndarray, end_logits: Sequence[np.ndarray] | np.ndarray,
               windows: QaWindows, contexts: Sequence[str], *, max_answer_length: int = 30, top_k: int = 1,
               n_best: int = 20) -> list[list[Span]]:
    """The ``top_k`` best answer spans of each example, best first, over all its windows.

    ``start_logits[w]``/``end_logits[w]`` are window ``w``'s logits (a row per window, at least as long as the
    window; padding beyond it is ignored). A span found in two overlapping windows is listed once, at its higher
    score. Every example gets at least one span: if no pair among the ``n_best`` passes, all pairs are tried.
    """
    for name, value in (("max_answer_length", max_answer_length), ("top_k", top_k), ("n_best", n_best)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise AdaretError(f"{name} must be a positive integer, got {value!r}")
    if len(start_logits) != len(windows) or len(end_logits) != len(windows):
        raise AdaretError(f"got {len(start_logits)} start and {len(end_logits)} end logit rows for "
                          f"{len(windows)} windows")
    if len(contexts) != windows.example_count:
        raise AdaretError(f"got {len(contexts)} context(s) for windows of {windows.example_count} example(s)")
    results = []
    for example, context in enumerate(contexts):
        members = windows.windows_of(example)
        scores, chars = _candidates(start_logits, end_logits, windows, members, max_answer_length, n_best)
        if not scores.size:  # no valid pair among the n_best: every pair is tried
            scores, chars = _candidates(start_logits, end_logits, windows, members, max_answer_length, None)
        results.append(_ranked(scores, chars, context, top_k))
    return results


def _candidates(start_logits: Any, end_logits: Any, windows: QaWindows, members: np.ndarray,
                max_answer_length: int, n_best: int | None) -> tuple[np.ndarray, np.ndarray]:
    found = [_window_candidates(start_logits[w], end_logits[w], windows.offsets[w], max_answer_length, n_best)
             for w in members]
    return np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])


def _window_candidates(start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray,
                       max_answer_length: int, n_best: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The scores and [start_char, end_char) of the valid pairs among a window's ``n_best`` starts and ends."""
    count = len(offsets)
    start, end = _row(start_logits, count), _row(end_logits, count)
    keep = count if n_best is None else min(n_best, count)
    starts = np.argsort(-start, kind="stable")[:keep]
    ends = np.argsort(-end, kind="stable")[:keep]
    s, e = np.meshgrid(starts, ends, indexing="ij")
    valid = ((offsets[s, 0] != NO_OFFSET) & (offsets[e, 0] != NO_OFFSET) & (e >= s)
             & (e - s < max_answer_length))
    s, e = s[valid], e[valid]
    return start[s] + end[e], np.stack([offsets[s, 0], offsets[e, 1]], axis=1)


def _row(logits: Any, count: int) -> np.ndarray:
    row = np.asarray(logits, dtype=np.float64).reshape(-1)
    if row.shape[0] < count:
        raise AdaretError(f"a window of {count} tokens got only {row.shape[0]} logits")
    return row[:count]


def _ranked(scores: np.ndarray, chars: np.ndarray, context: str, top_k: int) -> list[Span]:
    """The ``top_k`` best distinct character spans; a span two windows share keeps its higher score."""
    best: dict[tuple[int, int], float] = {}
    for index in np.argsort(-scores, kind="stable"):
        best.setdefault((int(chars[index, 0]), int(chars[index, 1])), float(scores[index]))
        if len(best) == top_k:
            break
    return [Span(context[a:b], score, a, b) for (a, b), score in best.items()]
