"""The engines stage on a real static-K export of the tiny checkpoint: lint (clean and injected faults), the
score path, build planning without TensorRT, sidecar fields from the export's metadata, and the ONNX Runtime
side of `adaret compare`."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import graph_at
from onnx import TensorProto, helper, numpy_helper

from adaret.core import graph_facts as gf
from adaret.core.errors import AdaretError
from adaret.core.fileio import sha256_file
from adaret.core.metadata import ExportMetadata
from adaret.core.onnx_files import save_model
from adaret.engines.builder import BuildFacts, engine_loader, execute_build, prepare_build
from adaret.engines.compare import TOLERANCES, compare, make_feeds
from adaret.engines.decisions import BuildRequest, decide_build_config
from adaret.engines.environment import tensorrt_available
from adaret.engines.lint import Severity, lint_model
from adaret.engines.profiles import profile_for_graph
from adaret.engines.sidecar import EngineSidecar, fields_from_metadata, write_sidecar
from adaret.export.onnx_export import keep_outputs
from adaret.graph_passes.pipeline import optimize

SEQ = 64


@pytest.fixture(scope="module")
def export(tiny_static_positions_export):
    return tiny_static_positions_export


@pytest.fixture(scope="module")
def graph(export):
    """The static graph for SEQ."""
    return graph_at(export, SEQ)


@pytest.fixture(scope="module")
def with_positions(graph) -> Path:
    return graph.path


@pytest.fixture(scope="module")
def logits_only(with_positions, tmp_path_factory) -> Path:
    """The default export form (logits only), derived from the same graph."""
    return save_model(keep_outputs(onnx.load(str(with_positions)), ["logits"]),
                      tmp_path_factory.mktemp("engines-logits") / "logits.onnx")


def _edited(source: Path, target: Path, edit: Callable[[onnx.ModelProto], None]) -> Path:
    model = onnx.load(str(source))
    edit(model)
    onnx.save(model, str(target))
    return target


def _node(model: onnx.ModelProto, name: str) -> tuple[int, onnx.NodeProto]:
    return next((i, n) for i, n in enumerate(model.graph.node) if n.name == name)


def _score_topks(path: Path) -> list[str]:
    model = gf.load_model(path)
    return [n.name for n in gf.nodes(model) if gf.is_score_topk(n)]


def _set_initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    tensor = next(t for t in model.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(array, name))


def _only(report, rule):
    return [f for f in report.findings if f.rule == rule]


@pytest.fixture(scope="module")
def optimized(graph) -> Path:
    """What export writes next to the static graph: the graph passes for the tensorrt target."""
    assert graph.optimized is not None and graph.optimized.target == "tensorrt"
    return graph.optimized.output


def test_static_exports_are_ready_for_tensorrt(with_positions, logits_only, optimized):
    for path in (with_positions, logits_only, optimized):
        report = lint_model(path)
        assert report.passed, report.table()
        assert report.rules(Severity.WARNING) == set()
        assert report.rules(Severity.INFO) <= {"int64-input", "int64-compute"}


def test_graph_passes_for_onnx_runtime_are_not_ready_for_tensorrt(with_positions, tmp_path):

    ort_graph = tmp_path / "model.ort.onnx"
    optimize(with_positions, ort_graph, target="ort-cpu")
    report = lint_model(ort_graph)
    custom = _only(report, "custom-domain")
    assert not report.passed and custom and all(f.severity is Severity.BLOCKER for f in custom)
    assert all(f.message.startswith("com.microsoft::") for f in custom)
    assert "ONNX Runtime-specific fusions" in custom[0].fix
    assert [f.severity for f in _only(report, "optimized-for")] == [Severity.WARNING]


def test_injected_nonzero_is_a_data_dependent_blocker(logits_only, tmp_path):
    def inject(model):
        _, first_ln = next((i, n) for i, n in enumerate(model.graph.node) if n.op_type == "LayerNormalization")
        model.graph.node.append(helper.make_node("NonZero", [first_ln.output[0]], ["nz"], name="injected_nonzero"))
        model.graph.output.append(helper.make_tensor_value_info("nz", TensorProto.INT64, None))

    report = lint_model(_edited(logits_only, tmp_path / "nonzero.onnx", inject))
    found = _only(report, "data-dependent-shape")
    assert not report.passed and [f.node for f in found] == ["injected_nonzero"]
    assert found[0].severity is Severity.BLOCKER
    assert "NonZero has a data-dependent output shape" in found[0].message and "Where" in found[0].fix


def _with_k(k_nodes: list[onnx.NodeProto], name: str):
    def inject(model):
        _, topk = _node(model, name)
        for node in reversed(k_nodes):
            model.graph.node.insert(0, node)
        topk.input[1] = k_nodes[-1].output[0]
        model.graph.initializer.extend([numpy_helper.from_array(np.array(1, np.int64), "inj_one"),
                                        numpy_helper.from_array(np.array(2, np.int64), "inj_two"),
                                        numpy_helper.from_array(np.array([1], np.int64), "inj_shape"),
                                        numpy_helper.from_array(np.array([0, 1], np.int64), "inj_axes")])
    return inject


def test_injected_dynamic_k_is_a_blocker_with_the_static_export_fix(logits_only, tmp_path):
    target = _score_topks(logits_only)[0]
    k_from_shape = [helper.make_node("Shape", ["input_ids"], ["inj_s"], name="inj_shape_of_ids"),
                    helper.make_node("Gather", ["inj_s", "inj_one"], ["inj_n"], name="inj_n", axis=0),
                    helper.make_node("Div", ["inj_n", "inj_two"], ["inj_h"], name="inj_half"),
                    helper.make_node("Reshape", ["inj_h", "inj_shape"], ["inj_k"], name="inj_k")]
    report = lint_model(_edited(logits_only, tmp_path / "dynk.onnx", _with_k(k_from_shape, target)))
    found = _only(report, "topk-dynamic-k")
    assert not report.passed and [f.node for f in found] == [target]
    assert "not a constant" in found[0].message and "computed from the input shape" in found[0].message
    assert "--static" in found[0].fix
    assert _only(report, "data-dependent-shape") == []  # a shape-derived K is not data-dependent


def test_k_from_tensor_values_is_a_data_dependent_blocker(logits_only, tmp_path):
    target = _score_topks(logits_only)[0]
    k_from_data = [helper.make_node("ReduceSum", ["attention_mask", "inj_axes"], ["inj_sum"], name="inj_sum",
                                    keepdims=0),
                   helper.make_node("Reshape", ["inj_sum", "inj_shape"], ["inj_k"], name="inj_k")]
    report = lint_model(_edited(logits_only, tmp_path / "datak.onnx", _with_k(k_from_data, target)))
    found = _only(report, "data-dependent-shape")
    assert [f.node for f in found] == [target] and "depends on tensor values" in found[0].message


def test_k_of_5000_is_a_blocker_naming_the_limit(logits_only, tmp_path):
    target = _score_topks(logits_only)[0]

    def inject(model):
        _set_initializer(model, _node(model, target)[1].input[1], np.array([5000], np.int64))

    report = lint_model(_edited(logits_only, tmp_path / "k5000.onnx", inject))
    found = _only(report, "topk-k-limit")
    assert not report.passed and target in [f.node for f in found]
    assert all("K=5000" in f.message and "3840" in f.message for f in found)
    # the other layers' TopKs keep their own (small) constant K
    assert {f.node for f in found} < {n.name for n in onnx.load(str(logits_only)).graph.node if n.op_type == "TopK"}


def _score_nodes(path: Path) -> dict[str, str]:
    model = gf.load_model(path)
    ops = {n.name: n.op_type for n in gf.nodes(model)}
    return {name: ops[name] for name in gf.score_path_node_names(model)}


def test_score_path_runs_from_the_gate_layernorm_to_the_score_topk(logits_only, graph):
    score = _score_nodes(logits_only)
    pruned = sum(1 for k in graph.keep_counts[SEQ] if k < SEQ)
    ops = list(score.values())
    assert ops.count("TopK") == pruned == len(_score_topks(logits_only))
    assert ops.count("LayerNormalization") == pruned and ops.count("MatMul") == pruned  # the linear scorers
    assert "Softmax" not in ops and "Erf" not in ops  # attention and the FFN are not on it
    index_sorts = [n.name for n in onnx.load(str(logits_only)).graph.node if n.op_type == "TopK"
                   and n.name not in score]
    assert len(index_sorts) == pruned  # the TopK that re-sorts kept indices is integer work, left alone


def _qdq(model, value: str, tag: str) -> list[onnx.NodeProto]:
    model.graph.initializer.extend([numpy_helper.from_array(np.array(0.05, np.float32), f"{tag}_scale"),
                                    numpy_helper.from_array(np.array(0, np.int8), f"{tag}_zp")])
    return [helper.make_node("QuantizeLinear", [value, f"{tag}_scale", f"{tag}_zp"], [f"{tag}_q"], name=f"{tag}_q"),
            helper.make_node("DequantizeLinear", [f"{tag}_q", f"{tag}_scale", f"{tag}_zp"], [f"{tag}_dq"],
                             name=f"{tag}_dq")]


def test_qdq_on_the_score_path_is_refused_and_on_a_weight_accepted(logits_only, tmp_path):
    score = _score_nodes(logits_only)
    squeeze = next(name for name, op in score.items() if op == "Squeeze")
    weight_mm = next(n for n in onnx.load(str(logits_only)).graph.node
                     if n.op_type == "MatMul" and n.name not in score)

    def on_scores(model):
        index, node = _node(model, squeeze)
        scores = node.output[0]
        users = [n for n in model.graph.node if scores in n.input]
        for n, new in enumerate(_qdq(model, scores, "sc")):
            model.graph.node.insert(index + 1 + n, new)
        for user in users:
            user.input[list(user.input).index(scores)] = "sc_dq"

    def on_weight(model):
        _, node = _node(model, weight_mm.name)
        for new in reversed(_qdq(model, node.input[1], "w")):
            model.graph.node.insert(0, new)
        node.input[1] = "w_dq"

    bad = lint_model(_edited(logits_only, tmp_path / "qdq_scores.onnx", on_scores), precision="int8-qdq")
    assert {f.node for f in _only(bad, "qdq-topk")} == {"sc_q", "sc_dq"} and not bad.passed
    good = lint_model(_edited(logits_only, tmp_path / "qdq_weight.onnx", on_weight), precision="int8-qdq")
    assert good.passed and not good.rules() & {"qdq-topk", "qdq-zero-point", "qdq-missing"}
    assert _only(lint_model(logits_only, precision="int8-qdq"), "qdq-missing")


def test_dla_rules_on_a_dynamic_batch_export(logits_only):
    report = lint_model(logits_only, target="jetson-orin", dla=True)
    assert {f.node for f in _only(report, "dla-static-shape")} == {"input_ids", "attention_mask", "token_type_ids"}
    fallback = _only(report, "dla-gpu-fallback")
    assert fallback and "TopK" in fallback[0].message and "GatherElements" in fallback[0].message
    assert {f.severity for f in _only(report, "int64-input")} == {Severity.WARNING}


def test_build_plan_for_tensorrt_10_and_11_without_tensorrt(logits_only, export, tmp_path):
    plan = prepare_build(logits_only, tensorrt_version="10.3.0", precision="fp16",
                         profiles="1x32,4x64,16x128", timing_cache=tmp_path / "timing.cache")
    assert plan.onnx_sha256 == sha256_file(logits_only)
    assert plan.profile.seq_len == SEQ and plan.profile.batch_range == (1, 4, 16)
    assert set(plan.profile.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert plan.decisions.precision_flags == ("fp16",) and plan.decisions.onnx_conversion is None
    assert plan.decisions.profiles == (plan.profile,)
    assert plan.decisions.timing_cache == str(tmp_path / "timing.cache")
    assert set(plan.decisions.fp32_nodes) == set(_score_nodes(logits_only))
    # the TopK input chain of every pruned layer is pinned to FP32, and only it
    assert plan.decisions.layer_precisions() == {name: "DataType.FLOAT" for name in _score_nodes(logits_only)}
    assert plan.metadata.budget == 0.5
    score_topks = set(_score_topks(logits_only))
    assert {op for name, op in plan.onnx_ops.items() if name in score_topks} == {"TopK"}
    plan11 = prepare_build(logits_only, tensorrt_version="11.1.0", precision="fp16")
    assert plan11.decisions.onnx_conversion == "autocast-fp16"
    assert plan11.decisions.fp32_nodes == plan.decisions.fp32_nodes and plan11.decisions.layer_precisions() == {}
    fp32 = prepare_build(logits_only, tensorrt_version="10.3.0", precision="fp32").decisions
    assert fp32.fp32_nodes == () and fp32.layer_precisions() == {}


_CHAIN = ("NetworkFromOnnxPath", "SetLayerPrecisions", "CreateConfig", "PostprocessConfig", "EngineBytesFromNetwork",
          "EngineFromBytes", "SaveEngine")


class _Loader:
    """Stands in for a Polygraphy loader class and records how the chain constructed it."""

    def __init__(self, kind, *args, **kwargs):
        self.kind, self.args, self.kwargs = kind, args, kwargs


def _recorded_chain(monkeypatch, decisions, tmp_path):
    import polygraphy.backend.trt as polygraphy_trt

    for name in _CHAIN:
        monkeypatch.setattr(polygraphy_trt, name, lambda *a, _kind=name, **k: _Loader(_kind, *a, **k))
    return engine_loader(decisions, Path("model.onnx"), tmp_path / ".model.plan.tmp")


def _comparable(kwargs):
    return kwargs | {"profiles": [repr(p) for p in kwargs["profiles"]]}  # Polygraphy profiles compare by identity


def test_the_build_is_one_lazy_polygraphy_chain_with_the_decided_kwargs(logits_only, tmp_path, monkeypatch):
    plan = prepare_build(logits_only, tensorrt_version="10.3.0", precision="fp16", profiles="1x64,8x64,32x64",
                         timing_cache=tmp_path / "timing.cache")
    save = _recorded_chain(monkeypatch, plan.decisions, tmp_path)
    assert save.kind == "SaveEngine" and save.kwargs == {"path": str(tmp_path / ".model.plan.tmp")}
    (engine,) = save.args
    assert engine.kind == "EngineFromBytes"
    (engine_bytes,) = engine.args
    assert engine_bytes.kind == "EngineBytesFromNetwork"
    assert engine_bytes.kwargs["save_timing_cache"] == str(tmp_path / "timing.cache")
    pinned, post = engine_bytes.args[0], engine_bytes.kwargs["config"]
    assert pinned.kind == "SetLayerPrecisions" and pinned.args[0].kind == "NetworkFromOnnxPath"
    assert pinned.args[0].args == ("model.onnx",)
    assert pinned.args[1] == {name: "DataType.FLOAT" for name in _score_nodes(logits_only)}
    assert post.kind == "PostprocessConfig" and isinstance(post.kwargs["func"], BuildFacts)
    (config,) = post.args
    assert config.kind == "CreateConfig" and _comparable(config.kwargs) == _comparable(
        plan.decisions.create_config_kwargs())
    (profile,) = config.kwargs["profiles"]
    assert {name: (s.min, s.opt, s.max) for name, s in profile.items()} == {
        name: ((1, SEQ), (8, SEQ), (32, SEQ)) for name in plan.profile.inputs}
    assert config.kwargs["fp16"] and config.kwargs["precision_constraints"] == "prefer"


def test_an_fp32_build_pins_nothing(logits_only, tmp_path, monkeypatch):
    plan = prepare_build(logits_only, tensorrt_version="10.3.0", precision="fp32")
    network = _recorded_chain(monkeypatch, plan.decisions, tmp_path).args[0].args[0].args[0]
    assert network.kind == "NetworkFromOnnxPath"  # no SetLayerPrecisions step
    config = _recorded_chain(monkeypatch, plan.decisions, tmp_path).args[0].args[0].kwargs["config"].args[0]
    assert not any(config.kwargs[k] for k in ("fp16", "bf16", "int8", "tf32"))


def test_the_real_polygraphy_loaders_are_built_without_tensorrt(logits_only, tmp_path):
    from polygraphy.backend.trt import EngineBytesFromNetwork, EngineFromBytes, SaveEngine

    plan = prepare_build(logits_only, tensorrt_version="10.3.0", precision="bf16", profiles="1x64,8x64,32x64")
    chain = engine_loader(plan.decisions, logits_only, tmp_path / "model.plan")
    assert isinstance(chain, SaveEngine) and chain.path == str(tmp_path / "model.plan")
    assert isinstance(chain._engine, EngineFromBytes)  # private: the chain's shape
    assert isinstance(chain._engine._serialized_engine, EngineBytesFromNetwork)
    assert not list(tmp_path.iterdir())  # lazy: nothing parsed, built or written


class _Layer:
    def __init__(self, name):
        self.name = name


class _Config:
    DLA_core = 0

    def can_run_on_dla(self, layer):
        return layer.name != "topk"


def test_build_facts_count_pinned_layers_and_set_the_dla_core():
    """The PostprocessConfig step, on stand-in layers: no TensorRT result, only what it reads and sets."""
    decisions = decide_build_config(BuildRequest("10.3.0", target="jetson-orin", dla_core=1, score_path=(
        "ln", "topk", "absent"), profile=profile_for_graph({"input_ids": [8, SEQ]})))
    facts, config = BuildFacts(decisions), _Config()
    facts(None, [_Layer("ln"), _Layer("topk"), _Layer("matmul")], config)
    assert config.DLA_core == 1  # CreateConfig(use_dla=True) alone would leave core 0
    assert facts.facts["fp32_pinned_layers"] == 2  # "absent" is not in the network
    assert facts.facts["dla"] == {"dla_capable": 2, "gpu_only": 1, "gpu_only_layers": ["topk"]}


def test_a_failed_build_leaves_no_plan_and_says_why_in_one_line(logits_only, tmp_path, monkeypatch):
    from polygraphy.exception import PolygraphyException

    import adaret.engines.builder as builder

    def refuse():
        raise PolygraphyException("Invalid Engine. Please ensure the engine was built correctly\nmore detail")

    monkeypatch.setattr(builder, "import_tensorrt", lambda: None)  # stops before anything TensorRT would do:
    monkeypatch.setattr(builder, "current_gpu", lambda: None)
    monkeypatch.setattr(builder, "engine_loader", lambda *args, **kwargs: refuse)
    monkeypatch.setattr(builder, "tensorrt_enum", lambda trt: None)
    plan = prepare_build(logits_only, tensorrt_version="10.3.0")
    out = tmp_path / "plans"
    with pytest.raises(AdaretError, match=r"^TensorRT could not build logits\.onnx: Invalid Engine[^\n]*$"):
        execute_build(plan, out / "model.plan")
    assert not list(out.iterdir())  # neither the plan nor its temporary file


def test_build_plan_refuses_blockers_and_impossible_targets(logits_only, tmp_path):
    broken = _edited(logits_only, tmp_path / "nz.onnx", lambda m: m.graph.node.append(
        helper.make_node("NonZero", ["attention_mask"], ["nz"], name="nz")))
    with pytest.raises(AdaretError, match=r"not ready for TensorRT.*data-dependent-shape at nz"):
        prepare_build(broken, tensorrt_version="10.3.0")
    with pytest.raises(AdaretError, match="dla-static-shape"):
        prepare_build(logits_only, tensorrt_version="10.3.0", target="jetson-orin")
    with pytest.raises(AdaretError, match="does not exist"):
        prepare_build(tmp_path / "missing.onnx", tensorrt_version="10.3.0")


def test_sidecar_fields_come_from_the_export_metadata(logits_only, export, graph, tmp_path):
    metadata = ExportMetadata.from_props(gf.load_model(logits_only).metadata_props)
    fields = fields_from_metadata(metadata)
    assert fields["budget"] == 0.5 and fields["training_budget"] == 0.4 and fields["seq_len"] == SEQ
    assert fields["keep_counts"] == {str(SEQ): graph.keep_counts[SEQ]}
    assert fields["schedule"]["numerators"] == list(export.schedule.numerators)
    assert fields["input_names"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert fields["label_names"] == ["business", "entertainment", "politics", "sports", "tech"]
    plan = prepare_build(logits_only, tensorrt_version="10.3.0")
    sidecar = EngineSidecar("10.3.0", "NVIDIA A10", "8.6", "fp16", "datacenter", [plan.profile], [1 << 20],
                            plan.onnx_sha256, logits_only.name, decisions=plan.decisions.as_dict(), **fields)
    write_sidecar(tmp_path / "m.plan", sidecar)
    assert EngineSidecar.from_json((tmp_path / "m.plan.json").read_text()) == sidecar


def test_make_feeds_stay_in_the_vocabulary_with_padding(logits_only):
    vocab = gf.graph_vocabulary(gf.load_model(logits_only))  # recorded by the export, from the tokenizer
    assert (vocab.size, vocab.cls_id, vocab.sep_id, vocab.pad_id) == (30522, 101, 102, 0)
    feeds = make_feeds({"input_ids": "INT64", "attention_mask": "INT64", "token_type_ids": "INT32"}, 4, SEQ,
                       vocab, count=3, seed=1)
    assert len(feeds) == 3
    for feed in feeds:
        ids, mask = feed["input_ids"], feed["attention_mask"]
        assert ids.dtype == np.int64 and feed["token_type_ids"].dtype == np.int32 and ids.shape == (4, SEQ)
        assert (ids < vocab.size).all() and (ids[:, 0] == 101).all() and (ids[mask == 0] == 0).all()
        lengths = mask.sum(1)
        assert (ids[np.arange(4), lengths - 1] == 102).all()
        assert mask.all(axis=1).any() and (lengths >= 2).all()


def _perturbed(source: Path, target: Path, pick: Callable[[onnx.ModelProto], str], change) -> Path:
    def edit(model):
        name = pick(model)
        tensor = next(t for t in model.graph.initializer if t.name == name)
        _set_initializer(model, name, change(numpy_helper.to_array(tensor)))
    return _edited(source, target, edit)


def test_compare_passes_for_the_same_graph_and_fails_for_changed_logits(with_positions, tmp_path):
    copy = Path(shutil.copy(with_positions, tmp_path / "copy.onnx"))
    same = compare(with_positions, copy, iterations=2)
    assert same.passed and same.max_abs_diff == {"logits": 0.0} and same.batch == 2 and same.seq_len == SEQ
    assert same.exact_match and all(same.exact_match.values())

    def classifier_bias(model):
        gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
        return gemm.input[2]

    shifted = _perturbed(with_positions, tmp_path / "shifted.onnx", classifier_bias, lambda b: b + 0.5)
    report = compare(with_positions, shifted, iterations=2, precision="fp16")
    assert not report.passed and report.max_abs_diff["logits"] == pytest.approx(0.5, abs=1e-4)
    assert (report.atol, report.rtol) == TOLERANCES["fp16"] and all(report.exact_match.values())
    assert compare(with_positions, shifted, iterations=1, atol=0.6).passed  # an explicit tolerance wins


def test_compare_catches_different_kept_positions(with_positions, tmp_path):
    score = _score_nodes(with_positions)
    scorer = next(name for name, op in score.items() if op == "MatMul")

    def scorer_weight(model):
        return _node(model, scorer)[1].input[1]

    flipped = _perturbed(with_positions, tmp_path / "flipped.onnx", scorer_weight, lambda w: -w)
    report = compare(with_positions, flipped, iterations=2)
    assert not report.passed and not all(report.exact_match.values())
    assert "DIFFERENT" in report.text()


def test_compare_cli_exit_codes(with_positions, tmp_path, capsys):
    from adaret.cli import main

    copy = shutil.copy(with_positions, tmp_path / "copy.onnx")
    assert main(["compare", str(with_positions), str(copy), "--iterations", "1"]) == 0
    assert "PASSED" in capsys.readouterr().out
    shifted = _perturbed(with_positions, tmp_path / "shifted.onnx",
                         lambda m: next(n for n in m.graph.node if n.op_type == "Gemm").input[2], lambda b: b + 1)
    assert main(["compare", str(with_positions), str(shifted), "--iterations", "1"]) == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.skipif(tensorrt_available(), reason="checks the behaviour without TensorRT")
def test_compare_against_a_plan_needs_tensorrt(logits_only, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"x")
    built = prepare_build(logits_only, tensorrt_version="10.3.0")
    write_sidecar(plan, EngineSidecar("10.3.0", "NVIDIA A10", "8.6", "fp16", "datacenter", [built.profile], [1],
                                      built.onnx_sha256, logits_only.name))
    with pytest.raises(AdaretError, match="tensorrt is not installed"):
        compare(logits_only, plan)


def test_compare_refuses_a_plan_from_another_build_as_the_runtime_does(logits_only, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"x")
    built = prepare_build(logits_only, tensorrt_version="10.3.0")
    write_sidecar(plan, EngineSidecar("10.3.0", "NVIDIA A10", "8.6", "fp16", "datacenter", [built.profile], [1],
                                      built.onnx_sha256, logits_only.name, plan_sha256="0" * 64))
    with pytest.raises(AdaretError, match="does not match its sidecar"):  # trt_session.plan_runner's check
        compare(logits_only, plan)


def test_build_check_cli(logits_only, tmp_path, capsys):
    from adaret.cli import main

    assert main(["build", "--check", str(logits_only)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:3] == ["SEVERITY", "RULE", "NODE"] and "ready for TensorRT" in out
    assert main(["build", "--check", str(logits_only), "--target", "jetson-orin"]) == 1
    assert "dla-static-shape" in capsys.readouterr().out
    assert main(["build", "--check", str(logits_only), "--dla", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False and data["dla"] is True
    assert {f["rule"] for f in data["findings"] if f["severity"] == "blocker"} == {"dla-static-shape"}
