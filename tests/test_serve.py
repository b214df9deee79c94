"""`adaret serve` and `adaret triton-repo`: configs parsed with Triton's own protobuf, the bundled tritonserver queried
with tritonclient, bad requests, SIGTERM, and the standalone repository's Python-backend models."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import adaret_serve, server_or_skip

from adaret.cli import main
from adaret.core.errors import AdaretError
from adaret.core.padding import pad_batch
from adaret.runtime import load
from adaret.serving import bundled
from adaret.serving.configs import Batching
from adaret.serving.export_facts import read_export
from adaret.serving.pbtxt import render
from adaret.serving.repository import write_served_repository, write_standalone_repository
from adaret.serving.server import Ports, backends_directory, start_server, wait_ready

httpclient = pytest.importorskip("tritonclient.http")
from google.protobuf import text_format  # noqa: E402  (after the skip: tritonclient brings the protobuf module)
from tritonclient.grpc import model_config_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_BATCH = 4
TEXTS = ["Shares in the bank fell sharply after the results.", "The striker scored twice in the final.",
         "A new phone with a faster chip", "Parliament voted on the budget late on Tuesday night, " * 12]


def _copy(result, tmp_path_factory, name: str) -> Path:
    """A private copy of a shared export (the session fixtures must stay untouched)."""
    target = tmp_path_factory.mktemp(name) / "export"
    shutil.copytree(result.config.out_dir, target)
    return target


def _parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def dynamic_export(tiny_dynamic_export, tmp_path_factory) -> Path:
    return _copy(tiny_dynamic_export, tmp_path_factory, "serve-dynamic")


@pytest.fixture(scope="module")
def static_export(tiny_static_export, tmp_path_factory) -> Path:
    return _copy(tiny_static_export, tmp_path_factory, "serve-static")


# --- configs and repositories (no server) ----------------------------------------------------------------------


def test_standalone_repository_configs_parse_and_follow_the_graph(dynamic_export, static_export, tmp_path):
    dynamic = read_export(dynamic_export)
    models = write_standalone_repository(dynamic, "m", Batching(8, 500, 2), tmp_path / "dyn")
    assert models == ["m", "m_tokenizer", "m_labels", "m_text"]
    configs = {m: _parse(tmp_path / "dyn" / m / "config.pbtxt") for m in models}
    graph = configs["m"]
    assert graph.platform == "onnxruntime_onnx" and graph.max_batch_size == 8
    assert graph.dynamic_batching.max_queue_delay_microseconds == 500
    assert graph.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert graph.instance_group[0].count == 2
    assert [i.name for i in graph.input] == dynamic.session.input_names
    assert all(i.data_type == model_config_pb2.TYPE_INT64 and list(i.dims) == [-1] for i in graph.input)
    assert [(o.name, list(o.dims)) for o in graph.output] == [("logits", [5])]
    assert (tmp_path / "dyn" / "m" / "1" / "model.onnx").read_bytes() == \
        (dynamic_export / "model.opt.onnx").read_bytes()  # the graph the runtime serves
    assert configs["m_tokenizer"].backend == "python"
    assert (tmp_path / "dyn" / "m_tokenizer" / "1" / "tokenizer.json").is_file()
    assert json.loads(configs["m_labels"].parameters["label_names"].string_value) == dynamic.label_names
    ensemble = configs["m_text"]
    assert ensemble.platform == "ensemble" and ensemble.input[0].data_type == model_config_pb2.TYPE_STRING
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["m_tokenizer", "m", "m_labels"]

    static = read_export(static_export)
    models = write_standalone_repository(static, "s", Batching(4, None, 1), tmp_path / "static", gpu=False)
    assert models == ["s_seq32", "s_seq64", "s_tokenizer", "s_labels", "s_text"]
    for length in (32, 64):
        config = _parse(tmp_path / "static" / f"s_seq{length}" / "config.pbtxt")
        assert all(list(i.dims) == [length] for i in config.input)
        assert not config.HasField("dynamic_batching")
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    tokenizer = _parse(tmp_path / "static" / "s_tokenizer" / "config.pbtxt")
    assert tokenizer.parameters["width"].string_value == "64"  # the ensemble's graph is the largest bucket
    assert _parse(tmp_path / "static" / "s_text" / "config.pbtxt").ensemble_scheduling.step[1].model_name == "s_seq64"


def test_tensorrt_plans_beside_a_static_export_become_tensorrt_models(static_export, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(static_export, export)
    (export / "model_seq64.plan").write_bytes(b"not a real plan: only copied")
    models = write_standalone_repository(read_export(export), "s", Batching(), tmp_path / "repo")
    assert "s_seq64_trt" in models and "s_seq32_trt" not in models
    config = _parse(tmp_path / "repo" / "s_seq64_trt" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and list(config.input[0].dims) == [64]
    assert _parse(tmp_path / "repo" / "s_text" / "config.pbtxt").ensemble_scheduling.step[1].model_name == \
        "s_seq64_trt"


def test_served_repository_configs_parse(dynamic_export, tmp_path):
    models = write_served_repository(read_export(dynamic_export), "m", Batching(4, 0, 1), tmp_path)
    logits, text = (_parse(tmp_path / m / "config.pbtxt") for m in models)
    assert logits.backend == "python" and logits.parameters["export"].string_value == str(dynamic_export.resolve())
    assert [i.optional for i in logits.input] == [False, False, True]  # token_type_ids defaults to zeros
    assert text.dynamic_batching.max_queue_delay_microseconds == 0
    assert text.parameters["max_batch"].string_value == "4" and text.parameters["max_batch_tokens"].string_value == ""
    capped = write_served_repository(read_export(dynamic_export), "c", Batching(4, 0, 1, max_batch_tokens=96),
                                     tmp_path / "capped")
    assert all(_parse(tmp_path / "capped" / m / "config.pbtxt").parameters["max_batch_tokens"].string_value == "96"
               for m in capped)
    assert text.parameters["memory"].string_value == ""  # the runtime's default allocator
    arena = write_served_repository(read_export(dynamic_export), "a", Batching(4, 0, 1, memory="arena"), tmp_path / "a")
    assert all(_parse(tmp_path / "a" / m / "config.pbtxt").parameters["memory"].string_value == "arena" for m in arena)
    assert [(o.name, o.data_type) for o in text.output] == [("label", model_config_pb2.TYPE_STRING),
                                                             ("probabilities", model_config_pb2.TYPE_FP32)]


def test_pbtxt_strings_survive_quotes_and_unicode():
    name = 'a "quoted" \\ label\twith ünïcode\n'
    config = {"name": "m", "parameters": [{"key": "k", "value": {"string_value": name}}]}
    assert text_format.Parse(render(config), model_config_pb2.ModelConfig()).parameters["k"].string_value == name


def test_triton_repo_command_claims_its_directory(dynamic_export, tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["triton-repo", str(dynamic_export), str(out), "--name", "bbc"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bbc", "bbc_labels", "bbc_text", "bbc_tokenizer"]
    assert main(["triton-repo", str(dynamic_export), str(out)]) == 1
    assert "is not empty" in capsys.readouterr().err
    before = (out / "bbc" / "config.pbtxt").read_text()
    assert main(["triton-repo", str(dynamic_export), str(out), "--name", "bbc", "--overwrite", "--cpu"]) == 0
    assert (out / "bbc" / "config.pbtxt").read_text() != before  # KIND_CPU now
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or lock left behind
    assert main(["triton-repo", str(dynamic_export), str(tmp_path / "x"), "--name", "../bad"]) == 1
    assert "model name" in capsys.readouterr().err


def test_server_environment_puts_the_stub_env_and_this_libpython_first(tmp_path):
    import sysconfig

    server = bundled.BundledServer(tmp_path / "pytriton" / "tritonserver")
    env = bundled.server_environment(server, tmp_path / "env", {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/x"})
    assert env["PATH"].split(os.pathsep)[0] == str(tmp_path / "env" / "bin")
    libraries = env["LD_LIBRARY_PATH"].split(os.pathsep)
    # Trap: the stub links whichever libpython3.X.so comes first; it must be this interpreter's own build.
    assert libraries[0] == sysconfig.get_config_var("LIBDIR")
    assert libraries[1:] == ["/opt/x", str(tmp_path / "nvidia_pytriton.libs")]


def test_server_environment_bounds_malloc_arenas_unless_the_user_set_them(tmp_path):
    server = bundled.BundledServer(tmp_path / "pytriton" / "tritonserver")
    env = bundled.server_environment(server, tmp_path / "env", {"PATH": "/usr/bin"})
    assert env["MALLOC_ARENA_MAX"] == "2" and env["MALLOC_TRIM_THRESHOLD_"] == "131072"
    mine = bundled.server_environment(server, tmp_path / "env", {"PATH": "/usr/bin", "MALLOC_ARENA_MAX": "8"})
    assert mine["MALLOC_ARENA_MAX"] == "8"


def test_a_numpy_2_environment_is_refused_for_the_stub():
    with pytest.raises(AdaretError, match=r"numpy 2.*needs numpy<2"):
        bundled.stub_environment(sys.prefix)  # the project's own environment has numpy 2


def test_serve_errors_are_one_line(tmp_path, capsys):
    server_or_skip()
    assert main(["serve", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("adaret serve: error:") and "\n" not in err


# --- the bundled server, end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(dynamic_export):
    # A cap this small splits every batch the server is handed into several Session runs (3 rows of width 32, 2 of
    # width 40, 1 of width 128), so the answers below are checked across that split too.
    with adaret_serve(dynamic_export, MAX_BATCH, max_batch_tokens=96) as running:
        yield running


def _token_inputs(ids: np.ndarray, mask: np.ndarray, dtype: str = "INT64") -> list:
    inputs = []
    for name, array in (("input_ids", ids), ("attention_mask", mask)):
        tensor = httpclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _text_input(texts) -> list:
    tensor = httpclient.InferInput("text", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode() if isinstance(t, str) else t] for t in texts], dtype=object))
    return [tensor]


def _random_batch(rows: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(rows, width), dtype=np.int64)
    ids[:, 0] = 101
    mask = np.ones_like(ids)
    for row in range(1, rows):
        mask[row, rng.integers(2, width + 1):] = 0
    return ids * mask, mask


def test_health_and_metrics(served):
    _, client, metrics = served
    assert client.is_server_ready() and client.is_model_ready("adaret") and client.is_model_ready("adaret_text")
    client.infer("adaret_text", _text_input(TEXTS[:1]))
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert 'nv_inference_request_success{model="adaret_text",version="1"}' in text


def test_logits_match_the_session_under_concurrent_requests(served, dynamic_export):
    _, client, _ = served
    session = load(dynamic_export)
    batches = [_random_batch(rows, width, seed) for seed, (rows, width) in
               enumerate([(1, 7), (2, 7), (3, 40), (1, 40), (4, 128), (2, 7), (1, 19), (3, 40)])]
    # In flight together (the client's async requests): the dynamic batcher groups them.
    pending = [client.async_infer("adaret", _token_inputs(*batch)) for batch in batches]
    results = [request.get_result(timeout=60).as_numpy("logits") for request in pending]
    for (ids, mask), logits in zip(batches, results, strict=True):
        np.testing.assert_allclose(logits, session.run(ids, mask)["logits"], atol=1e-5, rtol=0)


def test_labels_match_classify(served, dynamic_export):
    _, client, _ = served
    expected = load(dynamic_export).classify(TEXTS)
    pending = [client.async_infer("adaret_text", _text_input([text])) for text in TEXTS]
    one_by_one = [request.get_result(timeout=60) for request in pending]
    together = client.infer("adaret_text", _text_input(TEXTS))
    assert [r.as_numpy("label")[0, 0].decode() for r in one_by_one] == [p.label for p in expected]
    assert [label.decode() for label in together.as_numpy("label")[:, 0]] == [p.label for p in expected]
    np.testing.assert_allclose(together.as_numpy("probabilities"), np.stack([p.probabilities for p in expected]),
                               atol=1e-6)


@pytest.mark.parametrize("case", ["wrong dtype", "wrong rank", "empty text", "oversized batch", "bad token id",
                                  "not utf-8"])
def test_bad_requests_get_errors_and_the_server_keeps_serving(served, case):
    _, client, _ = served
    ids, mask = _random_batch(1, 8, 0)
    request = {
        "wrong dtype": ("adaret", lambda: _token_inputs(ids.astype(np.int32), mask.astype(np.int32), "INT32")),
        "wrong rank": ("adaret", lambda: _token_inputs(ids[None], mask[None])),
        "empty text": ("adaret_text", lambda: _text_input([TEXTS[0], "   "])),
        "oversized batch": ("adaret_text", lambda: _text_input(TEXTS * 2)),
        "bad token id": ("adaret", lambda: _token_inputs(ids + 10**6, mask)),
        "not utf-8": ("adaret_text", lambda: _text_input([b"\xff\xfe"])),
    }[case]
    with pytest.raises(InferenceServerException):
        client.infer(request[0], request[1]())
    assert client.infer("adaret", _token_inputs(ids, mask)).as_numpy("logits").shape == (1, 5)
    assert client.infer("adaret_text", _text_input(TEXTS[:1])).as_numpy("label").shape == (1, 1)


def test_sigterm_drains_and_exits_0(served):
    """Last in this module: it stops the shared server."""
    process, client, _ = served
    pending = [client.async_infer("adaret_text", _text_input(TEXTS)) for _ in range(6)]
    time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    for request in pending:  # the requests in flight at the signal are all answered
        assert request.get_result(timeout=30).as_numpy("label").shape == (len(TEXTS), 1)
    # Triton then waits for clients to close their keep-alive connections (up to --exit-timeout-secs)
    client.close()
    assert process.wait(timeout=60) == 0


# --- the standalone repository's Python-backend models, in the bundled server ----------------------------------


def test_standalone_tokenizer_and_label_models_run_in_the_bundled_server(dynamic_export, tmp_path):
    server_or_skip()
    facts = read_export(dynamic_export)
    repository = tmp_path / "repo"
    write_standalone_repository(facts, "m", Batching(MAX_BATCH, 100, 1), repository)
    http, grpc, metrics = astuple(Ports.free())
    extra = ["--model-control-mode=explicit", "--load-model=m_tokenizer", "--load-model=m_labels",
             "--exit-timeout-secs=5"]
    with backends_directory(bundled.find_bundled_server()) as backends:
        # The ONNX Runtime model and the ensemble need backends this server lacks: only the Python models load.
        process = start_server(repository, backends, Ports(http, grpc, metrics), extra=extra,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert wait_ready(process, http, timeout=60), process.communicate(timeout=5)[0][-3000:]
            client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
            session = facts.session
            for text in TEXTS:
                result = client.infer("m_tokenizer", _text_input([text]))
                encoded = session.encode([text])
                width = next(w for w in session.widths if w >= len(encoded.ids[0]))
                expected = pad_batch(encoded.ids, width, session.encoder.pad_id)
                for name in session.input_names:  # padded exactly as Session.classify pads this text
                    np.testing.assert_array_equal(result.as_numpy(name), expected[name])
                logits = session.run(expected["input_ids"], expected["attention_mask"])["logits"]
                tensor = httpclient.InferInput("logits", list(logits.shape), "FP32")
                tensor.set_data_from_numpy(logits.astype(np.float32))
                labels = client.infer("m_labels", [tensor])
                prediction = session.classify([text])[0]
                assert labels.as_numpy("label")[0, 0].decode() == prediction.label
                np.testing.assert_allclose(labels.as_numpy("probabilities")[0], prediction.probabilities, atol=1e-6)
            with pytest.raises(InferenceServerException, match="empty"):
                client.infer("m_tokenizer", _text_input([""]))
            client.close()  # else the server waits for the keep-alive connection at exit
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
