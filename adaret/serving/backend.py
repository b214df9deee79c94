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
from adaret.core.io_spec import LOGITS
from adaret.runtime.session import Session, load
from adaret.runtime.text import TruncationWarning
from adaret.serving.configs import LABEL, PROBABILITIES, TEXT
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
    """``<name>``: ``input_ids`` and ``attention_mask`` (and ``token_type_ids``) [batch, sequence] -> ``logits``.

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
        logits = self.session.run(**joined)[LOGITS].astype(np.float32, copy=False)
        bounds = np.cumsum([len(feeds["input_ids"]) for feeds in batch])[:-1]
        return [[self.pb.Tensor(LOGITS, np.ascontiguousarray(part))] for part in np.split(logits, bounds)]


class TextModel(_SessionModel):
    """``<name>_text``: UTF-8 ``text`` [batch, 1] -> ``label`` [batch, 1] and ``probabilities`` [batch, labels],
    by ``Session.classify`` with the export's tokenizer. classify pads each text to its own bucket, so a text's
    answer does not depend on the texts batched with it."""

    def run(self, requests: Sequence[Any]) -> list[Any]:
        outcomes: list[Any] = [None] * len(requests)
        batches: list[tuple[int, list[str]]] = []
        for index, request in enumerate(requests):
            try:
                batches.append((index, decode_texts(self.pb.get_input_tensor_by_name(request, TEXT).as_numpy())))
            except AdaretError as exc:
                outcomes[index] = exc
        results = run_together([texts for _, texts in batches], self._classify) if batches else []
        for (index, _), result in zip(batches, results, strict=True):
            outcomes[index] = result
        return outcomes

    def _classify(self, batches: Sequence[list[str]]) -> list[Any]:
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


def decode_texts(array: np.ndarray) -> list[str]:
    """A request's texts, by the standalone repository's rule (UTF-8, not blank); a bad one raises AdaretError."""
    try:
        return standalone_tokenizer.decode_texts(array)
    except ValueError as exc:
        raise AdaretError(str(exc)) from None
