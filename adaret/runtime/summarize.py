"""Summaries from a summarization export, torch-free: ``Summarizer(export_dir).summarize(texts)``.

``adaret.runtime.load(export_dir)`` returns a ``Summarizer`` for a directory with ``summarization.json`` (a
``Session`` for every other export), so ``load(d).summarize([...])`` works as ``load(d).classify([...])`` does.

How a text becomes a summary:

1. It is cut into chunks exactly as training cut it (``adaret.core.chunks``, the settings in
   ``summarization.json``): at most ``max_source_tokens`` tokens, rows of ``[CLS] piece [SEP]``.
2. Only real chunk rows are encoded (no all-padding rows). A document's rows are padded to its own longest chunk,
   never to another document's: K per layer follows the row length, so a document's memory, and its summary, do
   not depend on which documents share the batch (each is what ``RetentionSeq2Seq.generate`` gives it alone).
   Documents of the same row length share one encoder call.
3. Its memory is its chunks' compact memories concatenated; the documents of a batch are padded to the longest
   memory with mask 0, which no attention weight reaches.
4. Greedy (``num_beams=1``): ``decoder_model`` for the start token, then ``decoder_with_past`` step by step until the
   end token or ``max_new_tokens``. Beam search (``num_beams > 1``): log-probabilities summed along each beam; a
   beam that emits the end token among the best ``num_beams`` candidates becomes a finished hypothesis; a document
   stops when it holds ``num_beams`` of them (early stopping), or at ``max_new_tokens``, when its running beams
   join them; the answer is the best by ``sum of log-probs / length ** length_penalty`` (length: generated tokens,
   the end token included). With one beam this is greedy decoding exactly.
5. The tokens before the end token are decoded with special tokens skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from adaret.core.chunks import document_chunks, pad_chunks, plain_tokenizer
from adaret.core.detokenize import clean_spacing
from adaret.core.errors import AdaretError
from adaret.core.io_spec import SUMMARIZATION
from adaret.core.metadata import ExportMetadata
from adaret.core.outputs import check_manifest
from adaret.core.seq2seq_graphs import (
    GRAPH_NAMES,
    SETTINGS_NAME,
    LayerCache,
    Seq2SeqGraphs,
    SummarizationSettings,
    is_summarization_export,
    pad_memories,
)
from adaret.runtime.limits import DEFAULT_MAX_CHARS, check_max_chars, check_positive, check_texts
from adaret.runtime.runners import ORT_ERRORS, SessionFromOnnx, first_line
from adaret.runtime.text import TOKENIZER_FILE, TextEncoder

DEFAULT_LENGTH_PENALTY = 1.0


@dataclass(frozen=True)
class Hypothesis:
    """One document's summary as ids: ``tokens`` before the end token, and its length-normalised score."""

    tokens: list[int]
    score: float  # sum of the tokens' log-probabilities (end token included) / length ** length_penalty
    finished: bool  # ended with the end token (else cut at max_new_tokens)


class Summarizer:
    """A loaded summarization export: the three graphs, the tokenizer beside them, ``summarization.json``."""

    def __init__(self, directory: str | Path, *, memory: str | None = None, threads: int | None = None,
                 providers: list[str] | None = None, max_chars: int = DEFAULT_MAX_CHARS):
        directory = Path(directory)
        _check_directory(directory)
        used = [directory / name for name in (*GRAPH_NAMES, SETTINGS_NAME, TOKENIZER_FILE)]
        check_manifest(directory, [path for path in used if path.exists()])  # a missing one is named below
        self.source = directory
        self.max_chars = check_max_chars(max_chars)
        self.settings = SummarizationSettings.read(directory)
        sessions = [SessionFromOnnx(directory / name, memory=memory, threads=threads, providers=providers)()
                    for name in GRAPH_NAMES]
        self.graphs = Seq2SeqGraphs(*sessions, num_layers=self.settings.num_layers)
        self.metadata = ExportMetadata.from_props(sessions[0].get_modelmeta().custom_metadata_map, GRAPH_NAMES[0])
        if self.metadata.task != SUMMARIZATION.task:
            raise AdaretError(f"{directory}: {GRAPH_NAMES[0]} is a {self.metadata.task} graph; re-export the "
                              "summarization model")
        self.tokenizer = plain_tokenizer(TextEncoder.from_dir(directory).tokenizer)

    @property
    def budget(self) -> float:
        return self.metadata.budget

    def summarize(self, texts: Sequence[str], *, max_new_tokens: int | None = None, num_beams: int = 1,
                  batch_size: int = 8) -> list[str]:
        """One summary per text, in input order (see the module docstring for how)."""
        hypotheses = self.generate(texts, max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=batch_size)
        return [self.decode(h) for h in hypotheses]

    def decode(self, hypothesis: Hypothesis) -> str:
        return clean_spacing(self.tokenizer.decode(hypothesis.tokens, skip_special_tokens=True))

    def generate(self, texts: Sequence[str], *, max_new_tokens: int | None = None, num_beams: int = 1,
                 batch_size: int = 8, length_penalty: float = DEFAULT_LENGTH_PENALTY) -> list[Hypothesis]:
        """``summarize`` before decoding: each text's summary ids and score."""
        texts = check_texts(texts, self.max_chars, "summarize()")
        steps = self._max_new_tokens(max_new_tokens)
        for name, value in (("num_beams", num_beams), ("batch_size", batch_size)):
            check_positive(name, value)
        settings = self.settings
        documents = document_chunks(self.tokenizer, texts, chunk_length=settings.chunk_length,
                                    max_source_tokens=settings.max_source_tokens, cls_id=settings.start_id,
                                    sep_id=settings.end_id)
        found: list[Hypothesis] = []
        try:
            for first in range(0, len(documents), batch_size):
                memory, memory_mask = self.memory(documents[first:first + batch_size])
                found += self._decode(memory, memory_mask, steps, num_beams, length_penalty)
        except ORT_ERRORS as exc:
            raise AdaretError(f"ONNX Runtime could not run the summarization graphs: {first_line(exc)}") from None
        return found

    def memory(self, documents: Sequence[Sequence[Sequence[int]]]) -> tuple[np.ndarray, np.ndarray]:
        """The documents' memories [documents, longest, hidden] and masks, each document's rows padded to its own
        longest chunk (documents of one row length share an encoder call)."""
        by_width: dict[int, list[int]] = {}
        for index, doc in enumerate(documents):
            by_width.setdefault(max(len(chunk) for chunk in doc), []).append(index)
        memories: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0), np.empty(0))] * len(documents)
        for indices in by_width.values():
            rows = [chunk for index in indices for chunk in documents[index]]
            ids, mask = pad_chunks([rows], self.settings.pad_id)
            states, kept = self.graphs.encode(ids[0], mask[0])
            first = 0
            for index in indices:
                count = len(documents[index])
                memories[index] = (states[first:first + count].reshape(-1, states.shape[2]),
                                   kept[first:first + count].reshape(-1))
                first += count
        return pad_memories(memories)

    def _decode(self, memory: np.ndarray, memory_mask: np.ndarray, steps: int, num_beams: int,
                length_penalty: float) -> list[Hypothesis]:
        settings = self.settings
        if num_beams == 1:
            generated = self.graphs.greedy(memory, memory_mask, start_id=settings.start_id, end_id=settings.end_id,
                                           max_new_tokens=steps, keep_logits=True)
            return greedy_hypotheses(generated.tokens, generated.logits, settings.end_id, length_penalty)
        return beam_search(self.graphs, memory, memory_mask, start_id=settings.start_id, end_id=settings.end_id,
                           max_new_tokens=steps, num_beams=num_beams, length_penalty=length_penalty)

    def _max_new_tokens(self, requested: int | None) -> int:
        if requested is None:
            return self.settings.default_max_new_tokens
        check_positive("max_new_tokens", requested)
        limit = self.settings.max_new_tokens_limit
        if requested > limit:
            raise AdaretError(f"max_new_tokens {requested} exceeds the decoder's {limit} positions after the start "
                              "token")
        return int(requested)

    def classify(self, *args, **kwargs) -> NoReturn:
        raise AdaretError(f"{self.source} is a summarization export; classify() needs a sequence-classification "
                          "export (use summarize(texts), or adaret summarize)")

    def answer(self, *args, **kwargs) -> NoReturn:
        raise AdaretError(f"{self.source} is a summarization export; answer() needs a question-answering export "
                          "(use summarize(texts), or adaret summarize)")


def _check_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise AdaretError(f"{directory} is not a directory: a summarization export is a directory (encoder_model.onnx, "
                          f"decoder_model.onnx, decoder_with_past_model.onnx, {SETTINGS_NAME})")
    if not is_summarization_export(directory):
        raise AdaretError(f"{directory} is not a summarization export (no {SETTINGS_NAME}); export a summarization "
                          "checkpoint with adaret export --task summarization")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """In float64: beam scores add up many of these, and float32 sums would tie beams that differ."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def normalised(score: float, length: int, length_penalty: float) -> float:
    return score / max(length, 1) ** length_penalty


def greedy_hypotheses(tokens: np.ndarray, logits: Sequence[np.ndarray], end_id: int,
                      length_penalty: float = DEFAULT_LENGTH_PENALTY) -> list[Hypothesis]:
    """Greedy rows (a finished row repeats the end token) as hypotheses scored like beam search's."""
    steps = np.stack([log_softmax(step) for step in logits], axis=1) if logits else None
    found = []
    for row, ids in enumerate(tokens.tolist()):
        length = ids.index(end_id) + 1 if end_id in ids else len(ids)
        score = float(sum(steps[row, step, ids[step]] for step in range(length))) if steps is not None else 0.0
        found.append(Hypothesis(ids[:length - 1] if end_id in ids else ids, normalised(score, length, length_penalty),
                                end_id in ids))
    return found


@dataclass
class _Beams:
    """The running beams of a batch: ``documents * beams`` rows, a document's beams consecutive."""

    tokens: np.ndarray  # [rows, steps so far]
    scores: np.ndarray  # [documents, beams]: summed log-probabilities
    self_cache: list[LayerCache]


def beam_search(graphs: Seq2SeqGraphs, memory: np.ndarray, memory_mask: np.ndarray, *, start_id: int, end_id: int,
                max_new_tokens: int, num_beams: int,
                length_penalty: float = DEFAULT_LENGTH_PENALTY) -> list[Hypothesis]:
    """Length-normalised beam search over the graphs (see the module docstring); one hypothesis per document."""
    documents = memory.shape[0]
    start = np.full((documents, 1), start_id, dtype=np.int64)
    logits, self_cache, cross_cache = graphs.first_step(start, memory_mask, memory)
    # every beam of a document reads the same memory: the cross cache is repeated once and never reordered
    cross_cache = [(np.repeat(k, num_beams, axis=0), np.repeat(v, num_beams, axis=0)) for k, v in cross_cache]
    mask = np.repeat(memory_mask, num_beams, axis=0)
    scores = np.full((documents, num_beams), -np.inf)
    scores[:, 0] = 0.0  # one live beam at first: the first expansion picks num_beams distinct tokens
    beams = _Beams(np.zeros((documents * num_beams, 0), dtype=np.int64), scores,
                   [(np.repeat(k, num_beams, axis=0), np.repeat(v, num_beams, axis=0)) for k, v in self_cache])
    log_probs = np.repeat(log_softmax(logits[:, -1]), num_beams, axis=0)
    finished: list[list[Hypothesis]] = [[] for _ in range(documents)]
    for step in range(max_new_tokens):
        if step > 0:
            logits, beams.self_cache = graphs.next_step(beams.tokens[:, -1:], mask, beams.self_cache, cross_cache)
            log_probs = log_softmax(logits[:, -1])
        origins, tokens, scores = _expand(beams.scores, log_probs, finished, beams.tokens, end_id, length_penalty)
        if all(len(done) >= num_beams for done in finished):
            break
        beams = _Beams(np.concatenate([beams.tokens[origins], tokens[:, None]], axis=1), scores,
                       [(np.take(k, origins, axis=0), np.take(v, origins, axis=0)) for k, v in beams.self_cache])
    else:
        _close_running(beams, finished, num_beams, length_penalty)
    return [max(done, key=lambda h: h.score) for done in finished]


def _expand(scores: np.ndarray, log_probs: np.ndarray, finished: list[list[Hypothesis]], tokens: np.ndarray,
            end_id: int, length_penalty: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step: each document's best ``2 * beams`` continuations; an end token among the best ``beams`` finishes
    a hypothesis, the best ``beams`` others run on. Returns the new beams' origin rows, tokens and scores."""
    documents, num_beams = scores.shape
    vocab = log_probs.shape[1]
    candidates = (scores.reshape(-1, 1) + log_probs).reshape(documents, num_beams * vocab)
    best = np.argsort(-candidates, axis=1, kind="stable")[:, :2 * num_beams]
    origins = np.zeros((documents, num_beams), dtype=np.int64)
    next_tokens = np.full((documents, num_beams), end_id, dtype=np.int64)
    next_scores = np.full((documents, num_beams), -np.inf)
    length = tokens.shape[1] + 1
    for doc in range(documents):
        origins[doc] = doc * num_beams  # a document that is done keeps feeding its first row; nothing reads it
        if len(finished[doc]) >= num_beams:
            continue
        running = 0
        for rank, flat in enumerate(best[doc]):
            beam, token = divmod(int(flat), vocab)
            score = float(candidates[doc, flat])
            if token == end_id:
                if rank < num_beams:
                    finished[doc].append(Hypothesis(tokens[doc * num_beams + beam].tolist(),
                                                    normalised(score, length, length_penalty), True))
                continue
            origins[doc, running], next_tokens[doc, running], next_scores[doc, running] = \
                doc * num_beams + beam, token, score
            running += 1
            if running == num_beams:
                break
    return origins.reshape(-1), next_tokens.reshape(-1), next_scores


def _close_running(beams: _Beams, finished: list[list[Hypothesis]], num_beams: int, length_penalty: float) -> None:
    """At ``max_new_tokens``: a document still short of finished hypotheses takes its running beams as they are."""
    length = beams.tokens.shape[1]
    for doc, done in enumerate(finished):
        if len(done) >= num_beams:
            continue
        for beam in range(num_beams):
            score = float(beams.scores[doc, beam])
            if np.isfinite(score):
                done.append(Hypothesis(beams.tokens[doc * num_beams + beam].tolist(),
                                       normalised(score, length, length_penalty), False))
