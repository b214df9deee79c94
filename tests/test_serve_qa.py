"""`adaret serve` and `adaret triton-repo` for a question-answering export: the synthetic graph of
``tests/synthetic_qa.py`` (the right answer is "Santa Clara", wherever it lies) served by the bundled Triton and
compared with ``Session.run`` and ``Session.answer_batch``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from serving_helpers import adaret_serve
from synthetic_qa import LONG, QUESTION, SHORT, qa_graph, with_tokenizer

from adaret.cli import main
from adaret.runtime import load
from adaret.serving.configs import Batching
from adaret.serving.export_facts import read_export
from adaret.serving.repository import write_served_repository, write_standalone_repository

httpclient = pytest.importorskip("tritonclient.http")
from google.protobuf import text_format  # noqa: E402  (after the skip: tritonclient brings the protobuf module)
from tritonclient.grpc import model_config_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_BATCH = 4
PAIRS = [(QUESTION, SHORT), ("Which city?", LONG), ("Where?", "Santa Clara is in California."),
         ("And here?", "No city is named in this sentence at all.")]


@pytest.fixture(scope="module")
def qa_export(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("serve-qa")
    onnx.save(qa_graph(None), directory / "model.onnx")
    return with_tokenizer(directory)


def _parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def test_served_repository_of_a_qa_export(qa_export, tmp_path):
    models = write_served_repository(read_export(qa_export), "m", Batching(4, 100, 1), tmp_path)
    assert models == ["m", "m_text"]
    logits, text = (_parse(tmp_path / m / "config.pbtxt") for m in models)
    assert [(o.name, list(o.dims)) for o in logits.output] == [("start_logits", [-1]), ("end_logits", [-1])]
    assert [(i.name, i.data_type) for i in text.input] == [("question", model_config_pb2.TYPE_STRING),
                                                            ("context", model_config_pb2.TYPE_STRING)]
    assert [(o.name, o.data_type) for o in text.output] == [
        ("answer", model_config_pb2.TYPE_STRING), ("score", model_config_pb2.TYPE_FP32),
        ("start", model_config_pb2.TYPE_INT64), ("end", model_config_pb2.TYPE_INT64)]
    assert "AnswerModel" in (tmp_path / "m_text" / "1" / "model.py").read_text()


def test_standalone_repository_of_a_qa_export_holds_the_graph(qa_export, tmp_path, capsys):
    models = write_standalone_repository(read_export(qa_export), "qa", Batching(), tmp_path / "repo")
    assert models == ["qa"]
    graph = _parse(tmp_path / "repo" / "qa" / "config.pbtxt")
    assert graph.platform == "onnxruntime_onnx"
    assert [o.name for o in graph.output] == ["start_logits", "end_logits"]
    assert main(["triton-repo", str(qa_export), str(tmp_path / "cli")]) == 0
    assert "the graph models only" in capsys.readouterr().out


def test_a_summarization_export_is_refused_in_one_line(summarizer_export, capsys):
    assert main(["triton-repo", str(summarizer_export.config.out_dir), "unused"]) == 1
    err = capsys.readouterr().err.strip()
    assert "summarization export" in err and "\n" not in err


# --- the bundled server ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(qa_export):
    with adaret_serve(qa_export, MAX_BATCH, max_batch_tokens=64) as running:  # splits batches into runs
        yield running


def _texts(name: str, texts) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode() if isinstance(t, str) else t] for t in texts], dtype=object))
    return tensor


def _pair_inputs(pairs) -> list:
    return [_texts("question", [q for q, _ in pairs]), _texts("context", [c for _, c in pairs])]


def test_answers_match_the_session(served, qa_export):
    _, client, _ = served
    expected = [found[0] for found in load(qa_export).answer_batch([q for q, _ in PAIRS], [c for _, c in PAIRS])]
    assert expected[0].text == "Santa Clara" and expected[1].text == "Santa Clara"  # the long context's windows
    pending = [client.async_infer("adaret_text", _pair_inputs([pair])) for pair in PAIRS]
    one_by_one = [request.get_result(timeout=60) for request in pending]
    together = client.infer("adaret_text", _pair_inputs(PAIRS))
    for results in ([(r, 0) for r in one_by_one], [(together, row) for row in range(len(PAIRS))]):
        for (result, row), span in zip(results, expected, strict=True):
            assert result.as_numpy("answer")[row, 0].decode() == span.text
            assert (int(result.as_numpy("start")[row, 0]), int(result.as_numpy("end")[row, 0])) == \
                (span.start_char, span.end_char)
            assert result.as_numpy("score")[row, 0] == pytest.approx(span.score, abs=1e-5)


def test_start_and_end_logits_match_the_session(served, qa_export):
    _, client, _ = served
    session = load(qa_export)
    rng = np.random.default_rng(0)
    for rows, width in ((1, 9), (3, 33), (2, 64)):
        feeds = {"input_ids": rng.integers(1000, 30000, size=(rows, width)),
                 "attention_mask": np.ones((rows, width), dtype=np.int64),
                 "token_type_ids": (np.arange(width) >= width // 3).astype(np.int64)[None].repeat(rows, 0)}
        feeds["attention_mask"][-1, width // 2:] = 0
        inputs = []
        for name, array in feeds.items():
            tensor = httpclient.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array.astype(np.int64))
            inputs.append(tensor)
        result = client.infer("adaret", inputs)
        want = session.run(**feeds)
        for name in ("start_logits", "end_logits"):
            np.testing.assert_allclose(result.as_numpy(name), want[name], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["fewer contexts", "empty question", "oversized batch"])
def test_bad_requests_get_errors_and_the_server_keeps_serving(served, case):
    _, client, _ = served
    inputs = {"fewer contexts": [_texts("question", [QUESTION, QUESTION]), _texts("context", [SHORT])],
              "empty question": _pair_inputs([("  ", SHORT)]),
              "oversized batch": _pair_inputs(PAIRS * 2)}[case]
    with pytest.raises(InferenceServerException):
        client.infer("adaret_text", inputs)
    assert client.infer("adaret_text", _pair_inputs(PAIRS[:1])).as_numpy("answer")[0, 0] == b"Santa Clara"
