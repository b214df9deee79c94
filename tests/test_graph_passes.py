"""Each pass fires where it should and not where it should not; parity holds after each."""

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import BERT_VOCAB
from onnx import TensorProto, helper

from adaret.core.dummy_inputs import dummy_inputs
from adaret.core.errors import ParityError
from adaret.core.metadata import ExportMetadata
from adaret.export import ExportConfig, run_export
from adaret.graph_passes.base import GraphPass, Rewrite, op_histogram
from adaret.graph_passes.passes import (
    CleanupPass,
    FoldConstantsPass,
    LastLayerPruningPass,
    OrderRestoreEliminationPass,
    PackedAttentionPass,
    RowGatherPass,
    RowScatterPass,
    SplitSkipLayerNormPass,
    TransformerFusionPass,
)
from adaret.graph_passes.pipeline import ParityCheckedPass, ParityProbe, optimize
from tests.conftest import graph_at, save_tiny_checkpoint

LAYERS = 4  # the tiny model's
SEQ = 64  # the static graph's length, and the length the optimised graphs are checked at


def _export(checkpoint, out: Path, **kwargs):
    config = ExportConfig(budget=0.5, checkpoint=str(checkpoint), out=str(out),
                          parity_lengths=(16,), parity_batches=(2,), **kwargs)
    return run_export(config).graphs[0].path


@pytest.fixture(scope="module")
def dynamic_graph(tiny_dynamic_export) -> Path:
    return tiny_dynamic_export.graphs[0].path


@pytest.fixture(scope="module")
def static_graph(tiny_static_export) -> Path:
    return graph_at(tiny_static_export, SEQ).path


@pytest.fixture(scope="module")
def cls_graph(tmp_path_factory, tokenizer) -> Path:
    root = tmp_path_factory.mktemp("gp-cls")
    checkpoint = save_tiny_checkpoint(root / "ckpt", tokenizer, pooling="cls")
    return _export(checkpoint, root / "export")


def _fuse(graph: Path, out: Path) -> Path:
    fused, _ = _run(TransformerFusionPass(), graph)
    onnx.save(ir.serde.serialize_model(fused), str(out))
    return out


@pytest.fixture(scope="module")
def fused_dynamic_graph(dynamic_graph, tmp_path_factory) -> Path:
    """The dynamic graph after ``ort-fusions``: the input of the passes that work on the fused form."""
    return _fuse(dynamic_graph, tmp_path_factory.mktemp("gp-fused") / "fused.onnx")


@pytest.fixture(scope="module")
def fused_cls_graph(cls_graph, tmp_path_factory) -> Path:
    return _fuse(cls_graph, tmp_path_factory.mktemp("gp-fused-cls") / "fused.onnx")


def _ir(path: Path) -> ir.Model:
    return ir.serde.deserialize_model(onnx.load(str(path)))


def _run_pass(graph_pass: GraphPass, model: ir.Model, probe: ParityProbe):
    """One pass as the pipeline runs it: the model it returns and its report."""
    reports = []
    result = ParityCheckedPass(graph_pass, probe, reports.append)(model)
    return result.model, reports[0]


def _run(graph_pass: GraphPass, path: Path):
    probe = ParityProbe(onnx.load(str(path)), tolerance=1e-4)
    return _run_pass(graph_pass, _ir(path), probe)


def _toy_model(nodes, initializers=()) -> ir.Model:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph(nodes, "toy", [x], [y], initializer=list(initializers))
    return ir.serde.deserialize_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def test_fold_constants_fires_on_constant_arithmetic_and_not_on_a_clean_graph():
    two = helper.make_tensor("two", TensorProto.FLOAT, [2], [2.0, 2.0])
    foldable = _toy_model([helper.make_node("Add", ["two", "two"], ["four"]),
                           helper.make_node("Mul", ["x", "four"], ["y"])], [two])
    assert FoldConstantsPass()(foldable).modified
    assert "Add" not in op_histogram(foldable)
    clean = _toy_model([helper.make_node("Relu", ["x"], ["y"])])
    assert not FoldConstantsPass()(clean).modified


def test_static_graph_k_values_are_constants_after_folding(static_graph):
    model, report = _run(FoldConstantsPass(), static_graph)
    for node in model.graph:
        if node.op_type == "TopK":
            assert node.inputs[1].const_value is not None
    assert report.max_abs_diff is None or report.max_abs_diff <= 1e-4


def test_cleanup_removes_dead_code_and_duplicate_initializers():
    one_a = helper.make_tensor("one_a", TensorProto.FLOAT, [2], [1.0, 1.0])
    one_b = helper.make_tensor("one_b", TensorProto.FLOAT, [2], [1.0, 1.0])
    messy = _toy_model([helper.make_node("Add", ["x", "one_a"], ["a"]), helper.make_node("Add", ["a", "one_b"], ["y"]),
                        helper.make_node("Neg", ["x"], ["dead"])], [one_a, one_b])
    assert CleanupPass()(messy).modified
    assert "Neg" not in op_histogram(messy) and len(messy.graph.initializers) == 1
    clean = _toy_model([helper.make_node("Relu", ["x"], ["y"])])
    assert not CleanupPass()(clean).modified


def test_order_restore_elimination_fires_for_order_invariant_heads(dynamic_graph):
    before = op_histogram(_ir(dynamic_graph))["TopK"]
    model, report = _run(OrderRestoreEliminationPass(), dynamic_graph)
    assert report.modified and report.details["sorts removed"] == before // 2
    assert op_histogram(model)["TopK"] == before // 2
    assert report.max_abs_diff <= 1e-4


def test_order_restore_elimination_keeps_order_for_token_level_heads(dynamic_graph):
    model = _ir(dynamic_graph)
    model.metadata_props["adaret.pooling"] = "tokens"
    result = OrderRestoreEliminationPass()(model)
    assert not result.modified and "order" in result.skipped


def test_fusions_fire_in_every_layer_including_retained_ones(dynamic_graph):
    model, report = _run(TransformerFusionPass(), dynamic_graph)
    ops = op_histogram(model)
    assert ops["com.microsoft:MultiHeadAttention"] == LAYERS
    assert ops["com.microsoft:SkipLayerNormalization"] == 2 * LAYERS
    assert ops["com.microsoft:BiasGelu"] == LAYERS
    assert "Softmax" not in ops and report.nodes_after < report.nodes_before
    assert report.max_abs_diff <= 1e-4


def test_fusions_do_not_fire_without_a_transformer():
    graph = _toy_model([helper.make_node("Relu", ["x"], ["y"])])
    assert not TransformerFusionPass()(graph).modified


def test_last_layer_pruning_fires_for_a_cls_head(fused_cls_graph):
    model, report = _run(LastLayerPruningPass(), fused_cls_graph)
    assert report.modified and report.max_abs_diff <= 1e-4
    last_mha = [n for n in model.graph if n.op_type == "MultiHeadAttention"][-1]
    query_input = last_mha.inputs[0].producer()
    while query_input.op_type != "MatMul":
        query_input = next(i.producer() for i in query_input.inputs if i is not None and i.producer())
    assert query_input.inputs[0].producer().op_type == "Slice"


def test_last_layer_pruning_does_not_fire_for_a_mean_pooling_head(fused_dynamic_graph):
    result = LastLayerPruningPass()(_ir(fused_dynamic_graph))
    assert not result.modified and "more than CLS" in result.skipped


def test_packed_attention_folds_biases_and_packs_qkv_in_every_layer(fused_dynamic_graph):
    model, report = _run(PackedAttentionPass(), fused_dynamic_graph)
    ops = op_histogram(model)
    assert report.details["fused"] == {"mha_bias": LAYERS, "attention": LAYERS}
    assert ops["com.microsoft:Attention"] == LAYERS and "com.microsoft:MultiHeadAttention" not in ops
    assert report.removed["MatMul"] == 3 * LAYERS  # the Q, K and V products move into Attention
    assert report.max_abs_diff <= 1e-4


def test_packed_attention_leaves_a_pruned_last_layer_unpacked(fused_cls_graph):
    pruned, _ = _run(LastLayerPruningPass(), fused_cls_graph)
    probe = ParityProbe(onnx.load(str(fused_cls_graph)), tolerance=1e-4)
    model, report = _run_pass(PackedAttentionPass(), pruned, probe)
    ops = op_histogram(model)
    assert ops["com.microsoft:Attention"] == LAYERS - 1 and ops["com.microsoft:MultiHeadAttention"] == 1
    assert report.max_abs_diff <= 1e-4


def test_packed_attention_does_not_fire_before_the_fusions(dynamic_graph):
    result = PackedAttentionPass()(_ir(dynamic_graph))
    assert not result.modified and "ort-fusions" in result.skipped


def test_row_gather_replaces_every_expanded_row_gather(dynamic_graph):
    gated = op_histogram(_ir(dynamic_graph))["TopK"] // 2
    model, report = _run(RowGatherPass(), dynamic_graph)
    ops = op_histogram(model)
    assert report.details["row gathers"] == gated and ops["GatherND"] == gated
    assert all(n.attributes["batch_dims"].as_int() == 1 for n in model.graph if n.op_type == "GatherND")
    assert report.max_abs_diff <= 1e-4


def test_split_skip_layernorm_undoes_every_fused_skip_layernorm(fused_dynamic_graph):
    layer_norms = op_histogram(_ir(fused_dynamic_graph))["LayerNormalization"]
    model, report = _run(SplitSkipLayerNormPass(), fused_dynamic_graph)
    ops = op_histogram(model)
    assert report.details["split"] == 2 * LAYERS and "com.microsoft:SkipLayerNormalization" not in ops
    assert ops["LayerNormalization"] == layer_norms + 2 * LAYERS
    assert report.max_abs_diff <= 1e-4


def test_split_skip_layernorm_does_not_fire_on_an_unfused_graph(dynamic_graph):
    assert not SplitSkipLayerNormPass()(_ir(dynamic_graph)).modified


def _gather_model(index_shape: list[int], expand_to: list[int]) -> ir.Model:
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 5, 3])
    index = helper.make_tensor_value_info("index", TensorProto.INT64, index_shape)
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, expand_to)
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], expand_to)
    nodes = [helper.make_node("Expand", ["index", "shape"], ["expanded"]),
             helper.make_node("GatherElements", ["data", "expanded"], ["gathered"], axis=1),
             helper.make_node("Identity", ["gathered"], ["out"])]
    graph = helper.make_graph(nodes, "g", [data, index], [out], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(model))


def test_row_gather_fires_on_whole_rows_and_matches_gather_elements():
    model = _gather_model([2, 4, 1], [2, 4, 3])
    want_model = ir.serde.serialize_model(model)
    assert RowGatherPass()(model).modified and op_histogram(model)["GatherND"] == 1
    rng = np.random.default_rng(3)
    feeds = {"data": rng.standard_normal((2, 5, 3), dtype=np.float32), "index": rng.integers(0, 5, (2, 4, 1))}
    want = ort.InferenceSession(want_model.SerializeToString()).run(None, feeds)[0]
    got = ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString()).run(None, feeds)[0]
    np.testing.assert_array_equal(want, got)


def test_row_gather_does_not_fire_when_the_index_varies_along_features():
    model = _gather_model([2, 4, 3], [2, 4, 3])  # an element gather, not a row gather
    assert not RowGatherPass()(model).modified


def _scatter_model(index_shape: list[int], expand_to: list[int], reduction: str = "none") -> ir.Model:
    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, [2, 5, 3])
    index = helper.make_tensor_value_info("index", TensorProto.INT64, index_shape)
    updates = helper.make_tensor_value_info("updates", TensorProto.FLOAT, expand_to)
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 5, 3])
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], expand_to)
    nodes = [helper.make_node("Expand", ["index", "shape"], ["expanded"]),
             helper.make_node("ScatterElements", ["data", "expanded", "updates"], ["scattered"], axis=1,
                              reduction=reduction),
             helper.make_node("Identity", ["scattered"], ["out"])]
    graph = helper.make_graph(nodes, "g", [data, index, updates], [out], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(model))


@pytest.mark.parametrize("batch_rows", [[0, 1], [4, 0]])
def test_row_scatter_fires_on_whole_rows_and_matches_scatter_elements(batch_rows):
    model = _scatter_model([2, 4, 1], [2, 4, 3])
    want_model = ir.serde.serialize_model(model)
    result = RowScatterPass()(model)
    assert result.modified and result.details == {"row scatters": 1}
    ops = op_histogram(model)
    assert ops["ScatterND"] == 1 and "ScatterElements" not in ops
    rng = np.random.default_rng(batch_rows[0])
    # Distinct positions per row, as kept positions are; the second row's order is reversed or shuffled.
    index = np.stack([rng.permutation(5)[:4] for _ in range(2)])[..., None].astype(np.int64)
    feeds = {"data": rng.standard_normal((2, 5, 3), dtype=np.float32), "index": index,
             "updates": rng.standard_normal((2, 4, 3), dtype=np.float32)}
    want = ort.InferenceSession(want_model.SerializeToString()).run(None, feeds)[0]
    got = ort.InferenceSession(ir.serde.serialize_model(model).SerializeToString()).run(None, feeds)[0]
    np.testing.assert_array_equal(want, got)
    assert not np.array_equal(got, feeds["data"])  # the scatter wrote something


def test_row_scatter_does_not_fire_on_element_scatters_or_reductions():
    assert not RowScatterPass()(_scatter_model([2, 4, 3], [2, 4, 3])).modified  # an element scatter
    assert not RowScatterPass()(_scatter_model([2, 4, 1], [2, 4, 3], reduction="add")).modified


def test_a_pass_that_breaks_parity_fails_with_its_name(dynamic_graph, monkeypatch, tmp_path):
    from adaret.graph_passes import pipeline

    class ScaleHead(GraphPass):
        name = "scale-head"

        def rewrite(self, model):
            weight = model.graph.initializers["model.head.weight"]
            weight.const_value = ir.tensor(weight.const_value.numpy() * 2.0, name=weight.name)
            return Rewrite(True)

    with pytest.raises(ParityError, match="scale-head"):
        _run(ScaleHead(), dynamic_graph)
    # Through the pipeline's PassManager too: onnx-ir wraps a failing pass in PassErrors, optimize unwraps ours.
    monkeypatch.setitem(pipeline.PASSES, ScaleHead.name, ScaleHead)
    with pytest.raises(ParityError, match="scale-head"):
        optimize(dynamic_graph, tmp_path / "broken.onnx", passes=["cleanup", ScaleHead.name])
    assert not (tmp_path / "broken.onnx").exists()


@pytest.mark.parametrize("which", ["dynamic_graph", "static_graph"])
def test_pipeline_keeps_parity_and_shrinks_the_graph(which, request, tmp_path):
    source = request.getfixturevalue(which)
    target = "ort-cpu" if which == "dynamic_graph" else "tensorrt"
    result = optimize(source, tmp_path / "model.opt.onnx", target=target)
    assert result.nodes_after < result.nodes_before
    assert all(r.max_abs_diff is None or r.max_abs_diff <= 1e-4 for r in result.reports)
    meta = ExportMetadata.from_model(onnx.load(str(result.output)))
    assert [p["pass"] for p in meta.pass_report] == [r.name for r in result.reports]
    assert result.report_path.is_file()
    ops = op_histogram(_ir(result.output))
    if target == "tensorrt":
        assert not any(k.startswith("com.microsoft") for k in ops)
    # the optimised graph against the exported one on fresh inputs (not the probe's)
    feeds = dummy_inputs(3, SEQ, BERT_VOCAB, np.random.default_rng(11))
    want = ort.InferenceSession(str(source)).run(["logits"], feeds)[0]
    got = ort.InferenceSession(str(result.output)).run(["logits"], feeds)[0]
    assert np.abs(want - got).max() <= 1e-4


def test_fp16_keeps_precision_critical_ops_and_gate_scores_in_fp32(dynamic_graph, tmp_path):
    from adaret.core.graph_facts import score_path_node_names
    from adaret.graph_passes.passes import Float16Pass

    source = _ir(dynamic_graph)
    scorer_nodes = set(score_path_node_names(source))
    gate_norms = [n for n in source.graph if n.name in scorer_nodes and n.op_type == "LayerNormalization"]
    assert len(gate_norms) == op_histogram(source)["TopK"] // 2  # one gate LayerNorm per score TopK
    model, report = _run(Float16Pass(), dynamic_graph)
    assert report.max_abs_diff is not None and report.max_abs_diff <= Float16Pass.parity_tolerance
    fp16_values = {v.name for n in model.graph for v in n.outputs if v.dtype == ir.DataType.FLOAT16}
    for node in model.graph:
        if node.op_type in ("LayerNormalization", "Softmax", "TopK") or node.name in scorer_nodes:
            assert not any(v.name in fp16_values for v in node.outputs if v is not None), node.name
    assert any(n.op_type == "MatMul" and n.outputs[0].name in fp16_values for n in model.graph)


def test_fp16_is_refused_for_cpu_targets(dynamic_graph, tmp_path):
    from adaret.core.errors import AdaretError

    with pytest.raises(AdaretError, match="GPU targets"):
        optimize(dynamic_graph, tmp_path / "x.onnx", target="ort-cpu", fp16=True)
