"""TensorRT-readiness lint rules on small hand-built graphs (no export, no TensorRT)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adaret.engines import support_matrix as sm
from adaret.engines.lint import Severity, lint_model


def _model(nodes, inputs, outputs, initializers=(), opset=18, extra_opsets=()):
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers))
    opsets = [helper.make_opsetid("", opset), *extra_opsets]
    return helper.make_model(graph, opset_imports=opsets)


def _float(name, shape=("batch", 8)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _ints(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _findings(model, rule=None, **kwargs):
    report = lint_model(model, **kwargs)
    return report, [f for f in report.findings if rule is None or f.rule == rule]


def test_clean_float_graph_passes_without_findings():
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [_float("x")], [_float("y")])
    report, findings = _findings(model)
    assert report.passed and findings == []
    assert "ready for TensorRT" in report.summary()


def test_custom_domain_op_is_a_blocker_naming_the_domain():
    node = helper.make_node("FastGelu", ["x"], ["y"], name="ort_gelu", domain="com.microsoft")
    model = _model([node], [_float("x")], [_float("y")], extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    report, found = _findings(model, "custom-domain")
    assert not report.passed
    assert [f.node for f in found] == ["ort_gelu"] and "com.microsoft::FastGelu" in found[0].message


@pytest.mark.parametrize("op", ["Det", "MatMulInteger", "NotARealOp"])
def test_op_outside_the_matrix_is_a_blocker(op):
    model = _model([helper.make_node(op, ["x"], ["y"], name="n1")], [_float("x")], [_float("y")])
    _, found = _findings(model, "unsupported-op")
    assert len(found) == 1 and found[0].severity is Severity.BLOCKER and op in found[0].message
    assert ("marked unsupported" in found[0].message) == (op in sm.UNSUPPORTED_OPS)


def test_operand_type_outside_the_ops_types_is_a_blocker():
    ints = helper.make_tensor_value_info("a", TensorProto.INT64, [2, 2])
    node = helper.make_node("MatMul", ["a", "a"], ["y"], name="int_matmul")
    model = _model([node], [ints], [helper.make_tensor_value_info("y", TensorProto.INT64, [2, 2])])
    _, found = _findings(model, "dtype")
    assert [f.node for f in found] == ["int_matmul"] and "INT64" in found[0].message
    assert "FLOAT" in found[0].message  # lists what the parser does take


def test_where_is_typed_by_its_data_input_not_its_condition():
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [4])
    node = helper.make_node("Where", ["c", "x", "x"], ["y"], name="select")
    model = _model([node], [cond, _float("x", [4])], [_float("y", [4])])
    assert _findings(model, "dtype")[1] == []


def test_double_is_a_warning_and_a_string_a_blocker():
    double = helper.make_node("Cast", ["x"], ["d"], name="to_double", to=TensorProto.DOUBLE)
    back = helper.make_node("Cast", ["d"], ["y"], name="to_float", to=TensorProto.FLOAT)
    model = _model([double, back], [_float("x")], [_float("y")])
    onnx.checker.check_model(model)
    report, found = _findings(model, "dtype")
    assert [(f.severity, f.node) for f in found] == [(Severity.WARNING, "to_double")] and report.passed

    text = helper.make_tensor_value_info("s", TensorProto.STRING, [1])
    ident = helper.make_node("Identity", ["s"], ["t"], name="strings")
    model = _model([ident], [text], [helper.make_tensor_value_info("t", TensorProto.STRING, [1])])
    report, found = _findings(model, "dtype")
    assert not report.passed and any(f.severity is Severity.BLOCKER and "STRING" in f.message for f in found)


def test_run_time_reduce_axes_are_a_blocker():
    axes_src = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="reduce")
    model = _model([node], [_float("x"), axes_src], [_float("y", ["batch", 1])])
    _, found = _findings(model, "constant-input")
    assert [f.node for f in found] == ["reduce"]
    constant = _model([node], [_float("x")], [_float("y", ["batch", 1])], [_ints("axes", [1])])
    assert _findings(constant, "constant-input")[1] == []


def test_topk_with_sorted_zero_is_a_blocker():
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", axis=1, sorted=0)
    outs = [_float("v", ["batch", 3]), helper.make_tensor_value_info("i", TensorProto.INT64, ["batch", 3])]
    model = _model([node], [_float("x")], outs, [_ints("k", [3])])
    _, found = _findings(model, "topk-sorted")
    assert [f.node for f in found] == ["topk"]


def _reshape_model(shape_from_data: bool):
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape")]
    if shape_from_data:
        nodes += [helper.make_node("Cast", ["x"], ["xi"], name="cast", to=TensorProto.INT64),
                  helper.make_node("ReduceMax", ["xi", "ax"], ["m"], name="max", keepdims=0),
                  helper.make_node("Concat", ["m", "m"], ["s2"], name="concat", axis=0)]
    nodes.append(helper.make_node("Reshape", ["x", "s2" if shape_from_data else "s"], ["y"], name="reshape"))
    return _model(nodes, [_float("x")], [_float("y", ["a", "b"])], [_ints("ax", [0, 1])])


def test_shape_computed_from_data_is_data_dependent_but_from_shape_is_not():
    _, found = _findings(_reshape_model(True), "data-dependent-shape")
    assert [f.node for f in found] == ["reshape"] and "depends on tensor values" in found[0].message
    assert _findings(_reshape_model(False), "data-dependent-shape")[1] == []


def test_layernorm_statistics_outputs_are_a_blocker_only_when_used():
    scale = numpy_helper.from_array(np.ones(8, np.float32), "g")
    used = helper.make_node("LayerNormalization", ["x", "g"], ["y", "mean"], name="ln")
    outs = [_float("y"), _float("mean", ["batch", 1])]
    assert [f.node for f in _findings(_model([used], [_float("x")], outs, [scale]), "layernorm-outputs")[1]] == ["ln"]
    only_y = helper.make_node("LayerNormalization", ["x", "g"], ["y"], name="ln")
    assert _findings(_model([only_y], [_float("x")], [_float("y")], [scale]), "layernorm-outputs")[1] == []


@pytest.mark.parametrize(("opset", "target", "severity"), [
    (8, "datacenter", Severity.BLOCKER), (18, "datacenter", None), (22, "datacenter", Severity.WARNING),
    (22, "jetson-orin", Severity.BLOCKER), (26, "datacenter", Severity.BLOCKER)])
def test_opset_limits_follow_the_target(opset, target, severity):
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_float("x")], [_float("y")], opset=opset)
    found = _findings(model, "opset", target=target)[1]
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_dla_needs_static_input_shapes():
    dynamic = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_float("x")], [_float("y")])
    assert _findings(dynamic, "dla-static-shape")[1] == []  # only a DLA concern
    found = _findings(dynamic, "dla-static-shape", dla=True)[1]
    assert [f.node for f in found] == ["x"] and "batch" in found[0].message
    static = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_float("x", [4, 8])], [_float("y", [4, 8])])
    assert lint_model(static, dla=True).passed


def test_wide_int64_constant_is_flagged_except_as_a_slice_bound():
    big = _ints("big", [2**40])
    add = helper.make_node("Add", ["i", "big"], ["o"], name="add")
    ints = helper.make_tensor_value_info("i", TensorProto.INT64, [1])
    model = _model([add], [ints], [helper.make_tensor_value_info("o", TensorProto.INT64, [1])], [big])
    assert [f.node for f in _findings(model, "int64-range")[1]] == ["big"]
    sliced = helper.make_node("Slice", ["x", "zero", "big", "one"], ["y"], name="slice")
    model = _model([sliced], [_float("x")], [_float("y")], [_ints("zero", [0]), big, _ints("one", [1])])
    assert _findings(model, "int64-range")[1] == []


def _qdq_model(zero_point: int):
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    zp = numpy_helper.from_array(np.array(zero_point, np.int8), "zp")
    weight = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["dq"], name="dq"),
             helper.make_node("MatMul", ["dq", "w"], ["y"], name="mm")]
    return _model(nodes, [_float("x")], [_float("y")], [scale, zp, weight])


def test_qdq_zero_point_must_be_zero():
    assert lint_model(_qdq_model(0), precision="int8-qdq").passed
    found = _findings(_qdq_model(3), "qdq-zero-point")[1]
    assert {f.node for f in found} == {"q", "dq"}


def test_int8_precision_without_qdq_nodes_is_a_blocker():
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_float("x")], [_float("y")])
    assert lint_model(model).passed
    found = _findings(model, "qdq-missing", precision="int8-qdq")[1]
    assert len(found) == 1 and found[0].severity is Severity.BLOCKER


def test_table_lists_blockers_first_with_node_and_fix():
    nodes = [helper.make_node("Det", ["x"], ["d"], name="det_node"),
             helper.make_node("Cast", ["x"], ["y"], name="dbl", to=TensorProto.DOUBLE)]
    model = _model(nodes, [_float("x", [2, 2])], [_float("d", []), helper.make_tensor_value_info(
        "y", TensorProto.DOUBLE, [2, 2])])
    report = lint_model(model)
    severities = [f.severity for f in report.findings]
    assert severities == sorted(severities, key=[Severity.BLOCKER, Severity.WARNING, Severity.INFO].index)
    table = report.table()
    assert table.splitlines()[0].split()[:3] == ["SEVERITY", "RULE", "NODE"]
    assert "det_node" in table and "fix:" in table and table.splitlines()[-1] == report.summary()
    assert "NOT ready" in report.summary()
    assert report.as_dict()["findings"][0]["severity"] == "blocker"
