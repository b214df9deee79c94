"""Engines with a real TensorRT and GPU. Skipped where ``tensorrt`` is absent (as in this project's CI), and
deselected by default (marker ``tensorrt``): run with ``pytest -m tensorrt tests/test_engines_trt.py``."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

trt = pytest.importorskip("tensorrt")

from conftest import BERT_VOCAB, graph_at  # noqa: E402
from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath  # noqa: E402

from adaret.engines.builder import build_engine, execute_build, prepare_build, tensorrt_enum  # noqa: E402
from adaret.engines.compare import TOLERANCES, compare, make_feeds  # noqa: E402
from adaret.engines.decisions import PRECISIONS, BuildRequest, decide_build_config, parse_version  # noqa: E402
from adaret.engines.environment import current_gpu  # noqa: E402
from adaret.engines.sidecar import check_compatible, load_sidecar  # noqa: E402
from adaret.engines.trt_session import TrtPlanRunner  # noqa: E402

pytestmark = pytest.mark.tensorrt
SEQ = 64
PROFILES = f"1x{SEQ},2x{SEQ},4x{SEQ}"
MAJOR = parse_version(trt.__version__)[0]


@pytest.fixture(scope="module")
def static_graph(tiny_static_positions_export):
    return graph_at(tiny_static_positions_export, SEQ).path


def test_every_decided_name_exists_in_the_installed_tensorrt():
    enum = tensorrt_enum(trt)
    for precision in PRECISIONS:
        decisions = decide_build_config(BuildRequest(trt.__version__, precision=precision, onnx_has_qdq=True,
                                                     hardware_compat="ampere+", score_path=("a",)))
        decisions.create_config_kwargs(enum)  # raises AttributeError for a name this TensorRT lacks
        decisions.layer_precisions(enum)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_create_config_applies_the_decisions_to_a_real_builder_config(static_graph, precision):
    plan = prepare_build(static_graph, tensorrt_version=trt.__version__, precision=precision, profiles=PROFILES)
    builder, network, _parser = NetworkFromOnnxPath(str(static_graph))()
    config = CreateConfig(**plan.decisions.create_config_kwargs(tensorrt_enum(trt)))(builder, network)
    assert config.num_optimization_profiles == 1 and config.builder_optimization_level == 3
    assert config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED
    assert config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == plan.decisions.workspace_bytes
    assert not config.get_flag(trt.BuilderFlag.TF32)
    if MAJOR == 10:
        assert config.get_flag(trt.BuilderFlag.FP16) is (precision == "fp16")
        assert config.get_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS) is (precision == "fp16")


def _ort(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds), strict=True))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_built_plan_runs_and_matches_onnx_runtime(static_graph, tmp_path, precision):
    plan_path = build_engine(static_graph, tmp_path / "model.plan", precision=precision, profiles=PROFILES,
                             timing_cache=tmp_path / "timing.cache")
    sidecar = load_sidecar(plan_path)
    gpu = current_gpu()
    check_compatible(sidecar, tensorrt_version=trt.__version__, gpu_name=gpu.name,
                     compute_capability=gpu.compute_capability)
    assert sidecar.seq_len == SEQ and sidecar.budget == 0.5 and sidecar.device_memory_bytes[0] > 0
    assert (tmp_path / "timing.cache").stat().st_size > 0 and (tmp_path / "model.plan.layers.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the atomic write cleaned up
    assert "TopK" in sidecar.layer_summary["retention"]
    pinned = sidecar.layer_summary["build"]["fp32_pinned_layers"]
    assert (pinned is not None and pinned > 0) is (precision == "fp16" and MAJOR == 10)
    feeds = make_feeds({n: "INT64" for n in sidecar.input_names}, 2, SEQ, BERT_VOCAB, count=1)[0]
    with TrtPlanRunner(plan_path) as runner:
        got = runner.run(feeds)
    want = _ort(static_graph, feeds)
    atol, rtol = TOLERANCES[precision]
    np.testing.assert_allclose(got["logits"], want["logits"], atol=atol, rtol=rtol)
    for name in want:
        if name.startswith("kept_positions"):
            np.testing.assert_array_equal(got[name], want[name])
    assert compare(static_graph, plan_path, iterations=2).passed


def test_timing_cache_is_reused_and_benchmark_reports_device_time(static_graph, tmp_path):
    cache = tmp_path / "timing.cache"
    plan = prepare_build(static_graph, tensorrt_version=trt.__version__, profiles=PROFILES, timing_cache=cache)
    execute_build(plan, tmp_path / "a.plan")
    size = cache.stat().st_size
    execute_build(plan, tmp_path / "b.plan")
    assert cache.stat().st_size >= size
    feeds = make_feeds({n: "INT64" for n in load_sidecar(tmp_path / "b.plan").input_names}, 4, SEQ, BERT_VOCAB,
                       count=1)[0]
    with TrtPlanRunner(tmp_path / "b.plan") as runner:
        result = runner.benchmark(feeds, iterations=20, warmup=5)
        assert result.median_ms > 0 and result.p90_ms >= result.median_ms
        assert runner.device_memory_bytes() == load_sidecar(tmp_path / "b.plan").device_memory_bytes[0]
