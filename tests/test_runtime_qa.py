"""``Session.answer`` and ``adaret answer`` on a synthetic question-answering graph whose right answer is known
(``tests/synthetic_qa.py``: the best span in any context is "Santa Clara", whichever window holds it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from synthetic_qa import LONG, QA, QUESTION, SHORT, TOKENIZER, qa_graph, with_tokenizer

import adaret.runtime as rt
from adaret.cli import main
from adaret.core.errors import AdaretError
from adaret.core.metadata import ExportMetadata
from adaret.core.qa_windows import make_windows
from adaret.runtime.runners import InputSpec
from adaret.runtime.session import Session


@pytest.fixture(scope="module")
def dynamic_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("qa-dynamic")
    onnx.save(qa_graph(None), directory / "model.onnx")
    return with_tokenizer(directory)


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory) -> Path:
    """Two buckets; the 32-token graph adds 0.5 to every start logit, so a score tells which bucket ran."""
    directory = tmp_path_factory.mktemp("qa-static")
    onnx.save(qa_graph(32, bonus=0.5), directory / "model_seq32.onnx")
    onnx.save(qa_graph(64), directory / "model_seq64.onnx")
    return with_tokenizer(directory)


@pytest.fixture(scope="module")
def session(dynamic_dir) -> Session:
    return rt.load(dynamic_dir)


def santa_clara(context: str) -> tuple[int, int]:
    start = context.index("Santa Clara")
    return start, start + len("Santa Clara")


def test_answer_finds_the_planted_span(session):
    (span,) = session.answer(QUESTION, SHORT)
    assert span.text == "Santa Clara"
    assert (span.start_char, span.end_char) == santa_clara(SHORT)
    assert span.score == pytest.approx(24.0)  # 10 + mask + type, twice


def test_a_long_context_is_read_in_overlapping_windows(session):
    windows = make_windows(TOKENIZER, [QUESTION], [LONG], **{k: QA[k] for k in QA if k != "max_answer_length"})
    assert len(windows) > 3
    (span,) = session.answer(QUESTION, LONG)
    assert span.text == "Santa Clara" and (span.start_char, span.end_char) == santa_clara(LONG)


def test_question_tokens_are_never_answers(session):
    (span,) = session.answer("Is it Santa Clara or not?", "The game was played in Santa Clara.")
    assert (span.start_char, span.end_char) == santa_clara("The game was played in Santa Clara.")


def test_top_k_lists_distinct_spans_best_first(session):
    spans = session.answer(QUESTION, SHORT, top_k=3)
    assert len(spans) == 3 and spans[0].text == "Santa Clara"
    assert len({(s.start_char, s.end_char) for s in spans}) == 3
    assert [s.score for s in spans] == sorted((s.score for s in spans), reverse=True)
    assert all(SHORT[s.start_char:s.end_char] == s.text for s in spans)


def test_answer_batch_keeps_order_and_does_not_depend_on_its_batch(session):
    contexts = [LONG, SHORT, "Nobody knows where. It was in Santa Clara, they say."]
    questions = [QUESTION, "Where?", "Where was it?"]
    singles = [session.answer(q, c) for q, c in zip(questions, contexts, strict=True)]
    assert session.answer_batch(questions, contexts) == singles
    assert session.answer_batch(questions, contexts, batch_size=1) == singles
    assert [spans[0].start_char for spans in singles] == [santa_clara(c)[0] for c in contexts]


def test_static_buckets_take_each_window_to_its_bucket(static_dir):
    static = rt.load(static_dir)
    assert static.static_lengths == [32, 64]
    (short,) = static.answer("Where?", "It was in Santa Clara.")  # one window of under 32 tokens
    assert short.text == "Santa Clara" and short.score == pytest.approx(24.5)
    (long,) = static.answer(QUESTION, LONG)  # 64-token windows
    assert (long.start_char, long.end_char) == santa_clara(LONG) and long.score == pytest.approx(24.0)


def test_a_graph_without_token_types_gets_none(tmp_path):
    onnx.save(qa_graph(None, token_types=False), tmp_path / "model.onnx")
    (span,) = rt.load(with_tokenizer(tmp_path)).answer(QUESTION, SHORT)
    assert span.text == "Santa Clara" and span.score == pytest.approx(22.0)


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: s.answer("", SHORT), "the question is empty"),
    (lambda s: s.answer(QUESTION, " \n\t"), "the context is empty"),
    (lambda s: s.answer(QUESTION, None), "the context must be a string, got a NoneType"),
    (lambda s: s.answer(QUESTION, "x" * 2_000_000), "the context has 2,000,000 characters"),
    (lambda s: s.answer(QUESTION, SHORT, top_k=0), "top_k must be a positive integer"),
    (lambda s: s.answer_batch([QUESTION], []), "empty list of contexts"),
    (lambda s: s.answer_batch(QUESTION, [SHORT]), "takes a list of questions"),
    (lambda s: s.answer_batch([QUESTION, "Who?"], [SHORT]), "2 question"),
    (lambda s: s.answer_batch([QUESTION], ["  "]), r"contexts\[0\] is empty"),
    (lambda s: s.answer_batch([QUESTION], [SHORT], batch_size=0), "batch_size must be a positive integer"),
    (lambda s: s.classify(["some text"]), r"question-answering export; classify\(\) needs a sequence-classification"),
])
def test_bad_calls_are_one_line(session, call, message):
    with pytest.raises(AdaretError, match=message) as info:
        call(session)
    assert "\n" not in str(info.value)


class ClassifierRunner:
    def __init__(self):
        self.input_specs = {"input_ids": InputSpec("input_ids", np.dtype(np.int64), (None, None))}
        self.output_names = ["logits"]
        self.output_shapes = {"logits": (None, 2)}
        self.metadata = ExportMetadata(form="dynamic", budget=0.5, label_names=["no", "yes"])

    def infer(self, feeds):
        return {"logits": np.zeros((len(feeds["input_ids"]), 2), dtype=np.float32)}


def test_a_classifier_refuses_to_answer():
    with pytest.raises(AdaretError, match=r"sequence-classification export; answer\(\) needs a question-answering"):
        Session({None: ClassifierRunner()}).answer(QUESTION, SHORT)


def test_a_graph_without_its_tokenizer_cannot_answer(dynamic_dir, tmp_path):
    shutil.copyfile(dynamic_dir / "model.onnx", tmp_path / "model.onnx")
    with pytest.raises(AdaretError, match=r"no tokenizer\.json"):
        rt.load(tmp_path / "model.onnx").answer(QUESTION, SHORT)


def one_line(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 1 and err and "\n" not in err and "Traceback" not in err, err
    return err


def test_answer_command(dynamic_dir, tmp_path, capsys):
    context = tmp_path / "context.txt"
    context.write_bytes(b"\xef\xbb\xbf" + LONG.encode("utf-8"))  # a byte-order mark is not part of the text
    assert main(["answer", str(dynamic_dir), QUESTION, "--context-file", str(context)]) == 0
    start, end = santa_clara(LONG)
    assert capsys.readouterr().out == f"Santa Clara\t24.000\t{start}:{end}\n"
    assert main(["answer", str(dynamic_dir), QUESTION, "--context-file", str(context), "--json", "--top-k", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["question"] == QUESTION and len(result["answers"]) == 2
    assert result["answers"][0] == {"text": "Santa Clara", "score": 24.0, "start_char": start, "end_char": end}


def test_answer_command_errors_are_one_line(dynamic_dir, tmp_path, capsys):
    blank, latin1 = tmp_path / "blank.txt", tmp_path / "latin1.txt"
    blank.write_text(" \n\n", encoding="utf-8")
    latin1.write_bytes("café in Santa Clara".encode("latin-1"))
    model = str(dynamic_dir)
    assert "empty" in one_line(capsys, main(["answer", model, QUESTION, "--context-file", str(blank)]))
    assert "not valid UTF-8 (byte 0xe9" in one_line(capsys, main(["answer", model, QUESTION, "--context-file",
                                                                  str(latin1)]))
    assert "cannot read" in one_line(capsys, main(["answer", model, QUESTION, "--context-file",
                                                   str(tmp_path / "missing.txt")]))
    assert "the question is empty" in one_line(capsys, main(["answer", model, " ", "--context-file", str(latin1)]))
