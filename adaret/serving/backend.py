"""The Python-backend models ``adaret serve`` runs inside Triton, each over an ``adaret.runtime`` Session.

Triton's dynamic batcher hands the Python backend a list of requests; it does not concatenate them. Each model
here runs the whole list in as few Session calls as it can, and answers every request on its own: a request
the Session refuses gets an error response, and the others in the batch are still answered (so one bad request
never fails its neighbours, and the server keeps serving).

Each request is answered as soon as its own result is ready, through its response sender, not when the whole
batch is done: ``execute`` returns None, as the Python backend allows for a model that sends exactly one final
response per request. Why: a client with N requests in flight sends its next one when an answer comes back. Had
the batch's answers all waited for its last run, the batcher would have drained the queue, the instance would
wait for the client after every batch, and dynamic batching served fewer requests per second than none
(``benchmarks/results/serve_load.md``).

``triton_python_backend_utils`` exists only inside Triton's Python-backend stub, so it is imported when a model is
initialised, never at import time.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from adaret.core.errors import AdaretError
from adaret.core.padding import rows_per_batch
from adaret.runtime.session import Session, load
from adaret.runtime.text import TruncationWarning
from adaret.serving.configs import ANSWER, CONTEXT, END, LABEL, PROBABILITIES, QUESTION, SCORE, START, TEXT
from adaret.serving.standalone import tokenizer_model as standalone_tokenizer

THREADS_VARIABLE = "ADARET_SERVE_THREADS"


class _SessionModel:
    """What every model shares: the Session, built from the ``export`` parameter, and one response per request,
    sent when that request's answer (or its error) is known."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        self.settings = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        # ONNX Runtime intra-op threads per instance: $ADARET_SERVE_THREADS where set (benchmarks/serve_load.py sets
        # it; on a small CPU, instances x threads should not exceed the cores), else ONNX Runtime's default.
        threads = int(os.environ.get(THREADS_VARIABLE) or 0) or None
        memory = self.settings.get("memory") or None  # the CPU allocator `adaret serve --memory` chose
        self.session: Session = load(self.settings["export"], threads=threads, memory=memory)
        self.batch_size = int(self.settings.get("max_batch") or 16)
        self.max_tokens = int(self.settings.get("max_batch_tokens") or 0) or None
        # A text longer than the model reads is truncated, as documented; a warning per request would flood the log.
        warnings.simplefilter("ignore", TruncationWarning)

    def execute(self, requests: Sequence[Any]) -> None:
        senders = [request.get_response_sender() for request in requests]
        unanswered = set(range(len(requests)))
        try:
            for index, outcome in self.answers(requests):
                unanswered.discard(index)
                self._send(senders[index], outcome)
        except Exception as exc:  # whatever went wrong, every request still gets its one response
            for index in sorted(unanswered):
                self._send(senders[index], exc)
        return None

    def _send(self, sender: Any, outcome: Any) -> None:
        response = (self.pb.InferenceResponse(error=self.pb.TritonError(f"{type(outcome).__name__}: {outcome}"))
                    if isinstance(outcome, Exception) else self.pb.InferenceResponse(output_tensors=outcome))
        sender.send(response, flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def answers(self, requests: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """(position of a request, its output tensors or the exception that answers it), as each is known."""
        raise NotImplementedError

    def finalize(self) -> None:
        self.session = None  # type: ignore[assignment]


def run_together(items: Sequence[Any], run: Callable[[Sequence[Any]], list[Any]]) -> list[Any]:
    """``run`` over all ``items`` at once; if that fails, over each item alone, so that only the bad ones fail."""
    try:
        return run(items)
    except Exception as exc:  # any failure of a request is that request's answer, never the server's
        if len(items) == 1:
            return [exc]
        return [_failure(run, item) for item in items]


def _failure(run: Callable[[Sequence[Any]], list[Any]], item: Any) -> Any:
    try:
        return run([item])[0]
    except Exception as exc:
        return exc


class LogitsModel(_SessionModel):
    """``<name>``: ``input_ids`` and ``attention_mask`` (and ``token_type_ids``) [batch, sequence] -> the graph's
    outputs: ``logits``, or a question-answering graph's ``start_logits`` and ``end_logits`` [batch, sequence].

    Requests of the same sequence length run together, in Session runs of at most ``max_batch_tokens`` tokens: the
    dynamic graph's K follows the padded length, so rows of one length get exactly the logits each would alone. A
    static export's Session pads each batch to its bucket."""

    def answers(self, requests: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        groups: dict[int, list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            feeds = {name: tensor.as_numpy() for name in self.session.input_names
                     if (tensor := self.pb.get_input_tensor_by_name(request, name)) is not None}
            groups.setdefault(feeds["input_ids"].shape[-1], []).append((index, feeds))
        for width, members in sorted(groups.items()):
            for start in range(0, len(members), step := self._rows(width, members)):
                piece = members[start:start + step]
                results = run_together([feeds for _, feeds in piece], self._logits)
                yield from zip([index for index, _ in piece], results, strict=True)

    def _rows(self, width: int, members: Sequence[tuple[int, dict[str, np.ndarray]]]) -> int:
        """Requests per Session run: as many as the token cap allows, counting a request's rows."""
        rows = max(len(feeds["input_ids"]) for _, feeds in members)
        return rows_per_batch(width * rows, len(members), self.max_tokens)

    def _logits(self, batch: Sequence[dict[str, np.ndarray]]) -> list[Any]:
        joined = {name: np.concatenate([feeds[name] for feeds in batch]) for name in batch[0]}
        outputs = self.session.run(**joined)
        bounds = np.cumsum([len(feeds["input_ids"]) for feeds in batch])[:-1]
        parts = {name: np.split(outputs[name].astype(np.float32, copy=False), bounds)
                 for name in self.session.output_names}
        return [[self.pb.Tensor(name, np.ascontiguousarray(parts[name][row])) for name in parts]
                for row in range(len(batch))]


class _TextRequestsModel(_SessionModel):
    """A model whose requests carry UTF-8 texts: each request is read on its own (a bad one gets its error and
    leaves the batch), then the good ones are answered together by ``respond``, each as soon as it is done. If
    ``respond`` fails, each request not yet answered is run alone, so that only the bad ones fail."""

    def answers(self, requests: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        read: list[tuple[int, Any]] = []
        for index, request in enumerate(requests):
            try:
                read.append((index, self.read(request)))
            except AdaretError as exc:
                yield index, exc
        answered: set[int] = set()
        try:
            for position, result in self.respond([item for _, item in read]):
                answered.add(position)
                yield read[position][0], result
        except Exception:  # a failure of a request is that request's answer, never its neighbours'
            for position, (index, item) in enumerate(read):
                if position not in answered:
                    yield index, self._alone(item)

    def _alone(self, item: Any) -> Any:
        try:
            return next(result for _, result in self.respond([item]))
        except Exception as exc:
            return exc

    def read(self, request: Any) -> Any:
        raise NotImplementedError

    def respond(self, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """(position in ``items``, its output tensors), as each item is done."""
        raise NotImplementedError


class TextModel(_TextRequestsModel):
    """``<name>_text``: UTF-8 ``text`` [batch, 1] -> ``label`` [batch, 1] and ``probabilities`` [batch, labels],
    by ``Session.classify_runs`` with the export's tokenizer: a request is answered when the run holding its last
    text is done. Each text is padded to its own bucket, so its answer does not depend on the texts batched with
    it."""

    def read(self, request: Any) -> list[str]:
        return decode_texts(self.pb.get_input_tensor_by_name(request, TEXT).as_numpy())

    def respond(self, batches: Sequence[list[str]]) -> Iterator[tuple[int, Any]]:
        owners = [position for position, batch in enumerate(batches) for _ in batch]
        first = np.cumsum([0, *map(len, batches)])
        found: dict[int, Any] = {}
        remaining = [len(batch) for batch in batches]
        texts = [text for batch in batches for text in batch]
        for indices, predictions in self.session.classify_runs(texts, self.batch_size, self.max_tokens):
            for index, prediction in zip(indices, predictions, strict=True):
                found[index] = prediction
                owner = owners[index]
                remaining[owner] -= 1
                if remaining[owner] == 0:
                    yield owner, self._tensors([found.pop(i) for i in range(first[owner], first[owner + 1])])

    def _tensors(self, chosen: Sequence[Any]) -> list[Any]:
        labels = np.array([[p.label.encode("utf-8")] for p in chosen], dtype=np.object_)
        probabilities = np.stack([p.probabilities for p in chosen]).astype(np.float32, copy=False)
        return [self.pb.Tensor(LABEL, labels), self.pb.Tensor(PROBABILITIES, probabilities)]


class AnswerModel(_TextRequestsModel):
    """``<name>_text`` of a question-answering export: UTF-8 ``question`` and ``context`` [batch, 1] -> the best
    ``answer`` [batch, 1] with its ``score``, ``start`` and ``end`` (characters of the context), by
    ``Session.answer_batch``: long contexts in overlapping windows, the best span over all of them. Each pair is
    windowed and decoded on its own, so its answer does not depend on the pairs batched with it. The requests of a
    batch are answered together, when all their windows are done."""

    def read(self, request: Any) -> tuple[list[str], list[str]]:
        questions = decode_texts(self.pb.get_input_tensor_by_name(request, QUESTION).as_numpy())
        contexts = decode_texts(self.pb.get_input_tensor_by_name(request, CONTEXT).as_numpy())
        if len(questions) != len(contexts):
            raise AdaretError(f"{len(questions)} question(s) for {len(contexts)} context(s): send one of each per row")
        return questions, contexts

    def respond(self, requests: Sequence[tuple[list[str], list[str]]]) -> Iterator[tuple[int, Any]]:
        questions = [q for request_questions, _ in requests for q in request_questions]
        contexts = [c for _, request_contexts in requests for c in request_contexts]
        spans = [found[0] for found in self.session.answer_batch(
            questions, contexts, batch_size=self.batch_size, max_tokens=self.max_tokens)]
        start = 0
        for position, (request_questions, _) in enumerate(requests):
            chosen = spans[start:start + len(request_questions)]
            start += len(request_questions)
            yield position, [
                self.pb.Tensor(ANSWER, np.array([[s.text.encode("utf-8")] for s in chosen], dtype=np.object_)),
                self.pb.Tensor(SCORE, np.array([[s.score] for s in chosen], dtype=np.float32)),
                self.pb.Tensor(START, np.array([[s.start_char] for s in chosen], dtype=np.int64)),
                self.pb.Tensor(END, np.array([[s.end_char] for s in chosen], dtype=np.int64))]


def decode_texts(array: np.ndarray) -> list[str]:
    """A request's texts, by the standalone repository's rule (UTF-8, not blank); a bad one raises AdaretError."""
    try:
        return standalone_tokenizer.decode_texts(array)
    except ValueError as exc:
        raise AdaretError(str(exc)) from None
