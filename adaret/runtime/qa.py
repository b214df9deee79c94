"""Extractive question answering over a loaded Session: windows in, start/end logits through the graph, spans out.

The windows are cut with the settings the export recorded (``adaret.question_answering``) and each is padded to
its own bucket by the shared padding policy (``adaret.core.padding``), exactly as ``classify`` pads a text: a
window's answer then does not depend on which windows share its batch, and a static export's windows go to its
buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from adaret.core.errors import AdaretError
from adaret.core.io_spec import END_LOGITS, QUESTION_ANSWERING, START_LOGITS
from adaret.core.padding import plan_batches
from adaret.core.qa_windows import QaWindows, Span, best_spans, make_windows
from adaret.runtime.limits import check_text

if TYPE_CHECKING:
    from adaret.runtime.session import Session


def check_task(session: Session, task: str, method: str) -> None:
    """Refuse to run ``method`` on a graph exported for another task (its outputs would mean something else)."""
    found = session.metadata.task
    if found != task:
        hint = " (use answer(question, context), or adaret answer)" if found == QUESTION_ANSWERING.task else ""
        raise AdaretError(f"{session.source or 'the model'} is a {found} export; {method} needs a {task} "
                          f"export{hint}")


def answer_batch(session: Session, questions: Sequence[str], contexts: Sequence[str], *, top_k: int = 1,
                 batch_size: int = 8, max_tokens: int | None = None) -> list[list[Span]]:
    """The ``top_k`` best spans of each context for its question, best first, in input order."""
    check_task(session, QUESTION_ANSWERING.task, "answer()")
    questions = _checked(questions, "questions", session.max_chars)
    contexts = _checked(contexts, "contexts", session.max_chars)
    return _answer(session, questions, contexts, top_k, batch_size, max_tokens)


def answer_one(session: Session, question: str, context: str, *, top_k: int = 1) -> list[Span]:
    """The ``top_k`` best spans of one context, best first."""
    check_task(session, QUESTION_ANSWERING.task, "answer()")
    question = _checked_one(question, "the question", session.max_chars)
    context = _checked_one(context, "the context", session.max_chars)
    return _answer(session, [question], [context], top_k, 8)[0]


def _answer(session: Session, questions: list[str], contexts: list[str], top_k: int,
            batch_size: int, max_tokens: int | None = None) -> list[list[Span]]:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise AdaretError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise AdaretError(f"top_k must be a positive integer, got {top_k!r}")
    if session.encoder is None:
        raise AdaretError(f"no tokenizer.json next to {session.source or 'the model'}: questions need the tokenizer "
                          "that export writes beside the graph")
    settings = session.metadata.question_answering
    if settings is None:  # the metadata schema pairs it with the task; a hand-built Session may not
        raise AdaretError("the graph's metadata has no adaret.question_answering settings; re-export the model")
    windows = make_windows(session.encoder.tokenizer, questions, contexts,
                           max_length=min(settings["max_length"], session.max_length),
                           doc_stride=settings["doc_stride"], max_query_length=settings["max_query_length"],
                           pad_id=session.encoder.pad_id)
    start, end = _logits(session, windows, batch_size, max_tokens)
    return best_spans(start, end, windows, contexts, max_answer_length=settings["max_answer_length"], top_k=top_k)


def _logits(session: Session, windows: QaWindows, batch_size: int,
            max_tokens: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each window's start and end logits, run in batches of windows that share a bucket."""
    start: list[np.ndarray] = [np.empty(0)] * len(windows)
    end: list[np.ndarray] = [np.empty(0)] * len(windows)
    for batch in plan_batches(windows.lengths, session.widths, batch_size, max_tokens):
        feeds = windows.pad(batch.width, batch.indices)
        outputs = session.run(**{name: feeds[name] for name in session.input_names if name in feeds})
        missing = [name for name in (START_LOGITS, END_LOGITS) if name not in outputs]
        if missing:
            raise AdaretError(f"the graph has no {missing[0]} output; re-export the question-answering model")
        for row, index in enumerate(batch.indices):
            start[index], end[index] = outputs[START_LOGITS][row], outputs[END_LOGITS][row]
    return start, end


def _checked(texts: Sequence[str], name: str, max_chars: int) -> list[str]:
    if isinstance(texts, str):
        raise AdaretError(f"answer_batch() takes a list of {name}; use answer() for a single one")
    texts = list(texts)
    if not texts:
        raise AdaretError(f"answer_batch() got an empty list of {name}")
    return [_checked_one(text, f"{name}[{i}]", max_chars) for i, text in enumerate(texts)]


def _checked_one(text: str, name: str, max_chars: int) -> str:
    if not isinstance(text, str):
        raise AdaretError(f"{name} must be a string, got a {type(text).__name__}")
    if not text.strip():
        raise AdaretError(f"{name} is empty")
    return check_text(text, max_chars, name)
