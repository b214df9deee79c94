"""Summaries of engine-inspector layer JSON, on documents shaped like TensorRT 10.x and 11.x output."""

from __future__ import annotations

import json

import pytest

from adaret.core.errors import AdaretError
from adaret.engines.inspection import layer_record, parse_engine_information, summarize_layers

SEP = "\x1e"
ONNX_OPS = {"node_MatMul_74": "MatMul", "node_linear_6": "Add", "node_topk__1": "TopK", "node_topk_1__1": "TopK",
            "node_gather": "GatherElements", "node_gather_1": "GatherElements", "node_embedding": "Gather",
            "node_gelu": "Mul", "node_erf": "Erf"}


def _layer(name, layer_type, nodes=(), tactic=None):
    layer = {"Name": name, "LayerType": layer_type, "Inputs": [], "Outputs": [],
             "Metadata": SEP.join(f"[ONNX Layer: {n}]" for n in nodes)}
    if tactic:
        layer["TacticName"] = tactic
    return layer


def _engine_10x():
    layers = [
        _layer("node_embedding", "Gather", ["node_embedding"]),
        _layer("node_MatMul_74 + node_linear_6", "CaskGemmMatMul", ["node_MatMul_74", "node_linear_6"], "sm90_xmma"),
        _layer("PWN(node_erf, node_gelu)", "PointWiseV2", ["node_erf", "node_gelu"]),
        _layer("node_topk__1", "TopK", ["node_topk__1"]),
        _layer("node_topk_1__1", "TopK", ["node_topk_1__1"]),
        _layer("{ForeignNode[node_gather...node_gather_1]}", "Myelin", ["node_gather", "node_gather_1"]),
        _layer("node_topk__1 [profile 1]", "TopK", ["node_topk__1"]),  # second profile repeats layers
    ]
    return {"Layers": layers, "Bindings": ["input_ids", "attention_mask", "logits"]}


def test_fused_layers_and_where_retention_ops_ran():
    summary = summarize_layers(json.dumps(_engine_10x()), ONNX_OPS)
    assert summary.layers == 6 and summary.detailed  # the [profile 1] copy is not counted
    assert {r.name for r in summary.fused} == {"node_MatMul_74 + node_linear_6", "PWN(node_erf, node_gelu)",
                                               "{ForeignNode[node_gather...node_gather_1]}"}
    assert [r.name for r in summary.retention["TopK"]] == ["node_topk__1", "node_topk_1__1"]
    assert [r.layer_type for r in summary.retention["GatherElements"]] == ["Myelin"]
    assert [r.name for r in summary.retention["Gather"]] == ["node_embedding"]
    assert summary.devices == {"GPU": 6}
    assert summary.by_type["TopK"] == 2
    text = summary.text()
    assert "TopK ran in 2 layer(s): 2 x TopK on GPU" in text and "GatherElements ran in 1 layer(s)" in text


def test_tensorrt_11_document_with_io_tensors_is_read_the_same_way():
    info = _engine_10x()
    info["I/O Tensors"] = [{"Name": n, "IOMode": "Input"} for n in info.pop("Bindings")]
    assert summarize_layers(info, ONNX_OPS) == summarize_layers(_engine_10x(), ONNX_OPS)


def test_dla_layers_are_told_apart_from_gpu_layers():
    info = {"Layers": [_layer("{ForeignNode[node_MatMul_74...node_linear_6]}", "DLA", ["node_MatMul_74",
                                                                                         "node_linear_6"]),
                       _layer("input_ids to nvm", "Reformat"), _layer("node_topk__1", "TopK", ["node_topk__1"])]}
    summary = summarize_layers(info, ONNX_OPS)
    assert summary.devices == {"DLA": 1, "GPU": 2}
    assert summary.retention["TopK"][0].device == "GPU"


def test_layer_names_recover_onnx_nodes_when_metadata_is_missing():
    record = layer_record({"Name": "PWN(node_erf, node_gelu)", "LayerType": "PointWiseV2"}, ONNX_OPS)
    assert record.onnx_nodes == ("node_erf", "node_gelu")
    assert layer_record({"Name": "unknown_layer", "LayerType": "Shuffle"}, ONNX_OPS).onnx_nodes == ()


def test_names_only_output_is_summarised_without_detail():
    summary = summarize_layers({"Layers": ["node_topk__1", "node_MatMul_74 + node_linear_6"]}, ONNX_OPS)
    assert not summary.detailed and summary.layers == 2
    assert "DETAILED" in summary.text()
    assert [r.name for r in summary.retention["TopK"]] == ["node_topk__1"]


@pytest.mark.parametrize("bad", ["not json", json.dumps({"Bindings": []}), json.dumps([1, 2])])
def test_unreadable_inspector_output_is_an_error(bad):
    with pytest.raises(AdaretError):
        parse_engine_information(bad)
