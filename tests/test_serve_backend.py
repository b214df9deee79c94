"""The serving models' request handling, outside Triton: a stand-in for ``triton_python_backend_utils`` records
every response sent and every Session run, in one event list, so the order in which answers leave is checked
exactly (no timing). The bundled-server tests (test_serve.py) check the same models inside Triton."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from adaret.runtime import load
from adaret.serving.backend import LogitsModel, TextModel

FINAL = 1
SHORT, MEDIUM = "Shares fell.", "The striker scored twice in the final, " * 6
LONG = "Parliament voted on the budget late on Tuesday night, " * 12


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _Response:
    def __init__(self, output_tensors=None, error=None) -> None:
        self.outputs = {t.name: t.array for t in output_tensors or []}
        self.error = error


class _Request:
    def __init__(self, events: list, position: int, **inputs: np.ndarray) -> None:
        self.events, self.position, self.inputs = events, position, inputs

    def get_response_sender(self):
        return _Sender(self.events, self.position)


class _Sender:
    def __init__(self, events: list, position: int) -> None:
        self.events, self.position = events, position

    def send(self, response: _Response, flags: int = 0) -> None:
        self.events.append(("sent", self.position, response, flags))


def _fake_backend_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _Tensor
    module.InferenceResponse = _Response
    module.TritonError = str
    module.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    module.get_input_tensor_by_name = lambda request, name: (
        _Tensor(name, request.inputs[name]) if name in request.inputs else None)
    return module


def _model(cls, export, monkeypatch, events: list, max_batch_tokens: int | str = "", memory: str = ""):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_backend_utils())
    model = cls()
    parameters = {"export": str(export), "max_batch": "8", "max_batch_tokens": str(max_batch_tokens),
                  "memory": memory}
    model.initialize({"model_config": json.dumps({"parameters": {k: {"string_value": v}
                                                                  for k, v in parameters.items()}})})
    run = model.session.run
    model.session.run = lambda *args, **kwargs: (events.append(("run",)), run(*args, **kwargs))[1]
    return model


def _texts(*texts: str) -> np.ndarray:
    return np.array([[t.encode()] for t in texts], dtype=np.object_)


def _sent(events: list) -> dict[int, _Response]:
    sent = [e for e in events if e[0] == "sent"]
    assert all(flags == FINAL for *_, flags in sent)
    positions = [position for _, position, _, _ in sent]
    assert len(positions) == len(set(positions)), "a request was answered twice"
    return {position: response for _, position, response, _ in sent}


@pytest.fixture(scope="module")
def export(tiny_dynamic_export):
    return tiny_dynamic_export.config.out_dir


def test_each_text_request_is_answered_when_its_own_run_is_done(export, monkeypatch):
    events: list = []
    model = _model(TextModel, export, monkeypatch, events, max_batch_tokens=32)  # one 32-wide text per run
    requests = [_Request(events, 0, text=_texts(LONG)), _Request(events, 1, text=_texts(SHORT)),
                _Request(events, 2, text=_texts(MEDIUM, SHORT))]
    assert model.execute(requests) is None
    kinds = [e[0] if e[0] == "run" else e[1] for e in events]
    # Shortest bucket first: the two short texts share the first bucket, each alone in a run (the cap); request 1
    # leaves after the first run, request 2 after its medium text's run, the long text last.
    assert kinds == ["run", 1, "run", "run", 2, "run", 0]
    sent = _sent(events)
    expected = load(export).classify([LONG, SHORT, MEDIUM, SHORT])
    assert [sent[0].outputs["label"][0, 0].decode()] == [expected[0].label]
    np.testing.assert_allclose(sent[2].outputs["probabilities"],
                               np.stack([expected[2].probabilities, expected[3].probabilities]), atol=1e-6)


def test_a_bad_text_request_is_answered_at_once_and_the_others_still_run(export, monkeypatch):
    events: list = []
    model = _model(TextModel, export, monkeypatch, events)
    model.execute([_Request(events, 0, text=_texts(SHORT)), _Request(events, 1, text=_texts("   ")),
                   _Request(events, 2, text=_texts(LONG))])
    assert events[0][:2] == ("sent", 1)  # refused while reading, before any run
    sent = _sent(events)
    assert sent[1].error == "AdaretError: text[0] is empty: send at least one non-space character"
    assert sent[0].error is None and sent[2].error is None


def test_a_failing_batch_falls_back_to_each_request_alone(export, monkeypatch):
    events: list = []
    model = _model(TextModel, export, monkeypatch, events)
    classify_runs = model.session.classify_runs

    def refuses_together(texts, *args, **kwargs):
        if len(texts) > 1:
            raise RuntimeError("the batch failed")
        return classify_runs(texts, *args, **kwargs)

    model.session.classify_runs = refuses_together
    model.execute([_Request(events, 0, text=_texts(SHORT)), _Request(events, 1, text=_texts(MEDIUM))])
    sent = _sent(events)
    assert set(sent) == {0, 1} and all(r.error is None for r in sent.values())


def test_logits_requests_leave_run_by_run(export, monkeypatch):
    events: list = []
    model = _model(LogitsModel, export, monkeypatch, events, max_batch_tokens=16)
    rng = np.random.default_rng(0)
    shapes = [(1, 9), (2, 5), (1, 5)]
    feeds = [{"input_ids": rng.integers(1000, 20000, size=shape).astype(np.int64),
              "attention_mask": np.ones(shape, dtype=np.int64)} for shape in shapes]
    for f in feeds:
        f["input_ids"][:, 0] = 101
    model.execute([_Request(events, i, **f) for i, f in enumerate(feeds)])
    # Width 5 first, one request per run (2 rows x 5 already reach the cap of 16 tokens), then width 9.
    assert [e[0] if e[0] == "run" else e[1] for e in events] == ["run", 1, "run", 2, "run", 0]
    sent = _sent(events)
    session = load(export)
    for i, f in enumerate(feeds):
        np.testing.assert_allclose(sent[i].outputs["logits"], session.run(**f)["logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("memory", "arena"), [("", False), ("no-arena", False), ("arena", True)])
def test_the_served_session_uses_the_allocator_the_server_was_given(export, monkeypatch, memory, arena):
    """`adaret serve --memory` reaches every instance's Session through the model's parameters ("": the runtime's
    default, the arena off)."""
    model = _model(TextModel, export, monkeypatch, [], memory=memory)
    sessions = [runner.session for runner in model.session.runners.values()]
    assert sessions and all(s.get_session_options().enable_cpu_mem_arena == arena for s in sessions)
