"""The Python-backend models ``adaret serve`` runs inside Triton, each over an ``adaret.runtime`` Session.

Triton's dynamic batcher hands the Python backend a list of requests; it does not concatenate them. Each model
here runs the whole list in as few Session calls as it can, and answers every request on its own: a request
the Session refuses gets an error response, and the others in the batch are still answered (so one bad request
never fails its neighbours, and the server keeps serving).

``triton_python_backend_utils`` exists only inside Triton's Python-backend stub, so it is imported when a model is
initialised, never at import time.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from adaret.core.errors import AdaretError
from adaret.runtime.session import Session, load
from adaret.runtime.text import TruncationWarning
from adaret.serving.configs import ANSWER, CONTEXT, END, LABEL, PROBABILITIES, QUESTION, SCORE, START, TEXT
from adaret.serving.standalone import tokenizer_model as standalone_tokenizer

THREADS_VARIABLE = "ADARET_SERVE_THREADS"


class _SessionModel:
    """What both models share: the Session, built from the ``export`` parameter, and per-request error answers."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        self.settings = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        # ONNX Runtime intra-op threads per instance: $ADARET_SERVE_THREADS where set (benchmarks/serve_load.py sets
        # it; on a small CPU, instances x threads should not exceed the cores), else ONNX Runtime's default.
        threads = int(os.environ.get(THREADS_VARIABLE) or 0) or None
        self.session: Session = load(self.settings["export"], threads=threads)
        # A text longer than the model reads is truncated, as documented; a warning per request would flood the log.
        warnings.simplefilter("ignore", TruncationWarning)

    def execute(self, requests: Sequence[Any]) -> list[Any]:
        outcomes = self.run(requests)
        return [self.pb.InferenceResponse(error=self.pb.TritonError(f"{type(o).__name__}: {o}"))
                if isinstance(o, Exception) else self.pb.InferenceResponse(output_tensors=o) for o in outcomes]

    def run(self, requests: Sequence[Any]) -> list[Any]:
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

    Requests of the same sequence length run as one Session batch: the dynamic graph's K follows the padded
    length, so rows of one length get exactly the logits each would alone. A static export's Session pads each
    batch to its bucket."""

    def run(self, requests: Sequence[Any]) -> list[Any]:
        outcomes: list[Any] = [None] * len(requests)
        groups: dict[int, list[tuple[int, dict[str, np.ndarray]]]] = {}
        for index, request in enumerate(requests):
            feeds = {name: tensor.as_numpy() for name in self.session.input_names
                     if (tensor := self.pb.get_input_tensor_by_name(request, name)) is not None}
            groups.setdefault(feeds["input_ids"].shape[-1], []).append((index, feeds))
        for members in groups.values():
            results = run_together([feeds for _, feeds in members], self._logits)
            for (index, _), result in zip(members, results, strict=True):
                outcomes[index] = result
        return outcomes

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
    leaves the batch), then the good ones are answered together by ``respond``, one answer per request."""

    def run(self, requests: Sequence[Any]) -> list[Any]:
        outcomes: list[Any] = [None] * len(requests)
        read: list[tuple[int, Any]] = []
        for index, request in enumerate(requests):
            try:
                read.append((index, self.read(request)))
            except AdaretError as exc:
                outcomes[index] = exc
        results = run_together([item for _, item in read], self.respond) if read else []
        for (index, _), result in zip(read, results, strict=True):
            outcomes[index] = result
        return outcomes

    def read(self, request: Any) -> Any:
        raise NotImplementedError

    def respond(self, items: Sequence[Any]) -> list[Any]:
        raise NotImplementedError


class TextModel(_TextRequestsModel):
    """``<name>_text``: UTF-8 ``text`` [batch, 1] -> ``label`` [batch, 1] and ``probabilities`` [batch, labels],
    by ``Session.classify`` with the export's tokenizer. classify pads each text to its own bucket, so a text's
    answer does not depend on the texts batched with it."""

    def read(self, request: Any) -> list[str]:
        return decode_texts(self.pb.get_input_tensor_by_name(request, TEXT).as_numpy())

    def respond(self, batches: Sequence[list[str]]) -> list[Any]:
        texts = [text for batch in batches for text in batch]
        predictions = self.session.classify(texts, batch_size=int(self.settings.get("max_batch", 16)))
        answers, start = [], 0
        for batch in batches:
            chosen = predictions[start:start + len(batch)]
            start += len(batch)
            labels = np.array([[p.label.encode("utf-8")] for p in chosen], dtype=np.object_)
            probabilities = np.stack([p.probabilities for p in chosen]).astype(np.float32, copy=False)
            answers.append([self.pb.Tensor(LABEL, labels), self.pb.Tensor(PROBABILITIES, probabilities)])
        return answers


class AnswerModel(_TextRequestsModel):
    """``<name>_text`` of a question-answering export: UTF-8 ``question`` and ``context`` [batch, 1] -> the best
    ``answer`` [batch, 1] with its ``score``, ``start`` and ``end`` (characters of the context), by
    ``Session.answer_batch``: long contexts in overlapping windows, the best span over all of them. Each pair is
    windowed and decoded on its own, so its answer does not depend on the pairs batched with it."""

    def read(self, request: Any) -> tuple[list[str], list[str]]:
        questions = decode_texts(self.pb.get_input_tensor_by_name(request, QUESTION).as_numpy())
        contexts = decode_texts(self.pb.get_input_tensor_by_name(request, CONTEXT).as_numpy())
        if len(questions) != len(contexts):
            raise AdaretError(f"{len(questions)} question(s) for {len(contexts)} context(s): send one of each per row")
        return questions, contexts

    def respond(self, requests: Sequence[tuple[list[str], list[str]]]) -> list[Any]:
        questions = [q for request_questions, _ in requests for q in request_questions]
        contexts = [c for _, request_contexts in requests for c in request_contexts]
        spans = [found[0] for found in self.session.answer_batch(
            questions, contexts, batch_size=int(self.settings.get("max_batch", 16)))]
        answers, start = [], 0
        for request_questions, _ in requests:
            chosen = spans[start:start + len(request_questions)]
            start += len(request_questions)
            answers.append([
                self.pb.Tensor(ANSWER, np.array([[s.text.encode("utf-8")] for s in chosen], dtype=np.object_)),
                self.pb.Tensor(SCORE, np.array([[s.score] for s in chosen], dtype=np.float32)),
                self.pb.Tensor(START, np.array([[s.start_char] for s in chosen], dtype=np.int64)),
                self.pb.Tensor(END, np.array([[s.end_char] for s in chosen], dtype=np.int64))])
        return answers


def decode_texts(array: np.ndarray) -> list[str]:
    """A request's texts, by the standalone repository's rule (UTF-8, not blank); a bad one raises AdaretError."""
    try:
        return standalone_tokenizer.decode_texts(array)
    except ValueError as exc:
        raise AdaretError(str(exc)) from None
