"""Fold the Q/K/V bias Adds into MultiHeadAttention, then pack Q/K/V into one ``Attention`` node."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from adaret.graph_passes.base import GraphPass, Rewrite


class PackedAttentionPass(GraphPass):
    """Fold the Q/K/V bias Adds into MultiHeadAttention, then pack Q/K/V into one ``Attention`` node.

    ``optimize_for_ort`` tries both but neither fires on our graphs: its MultiHeadAttention rewrite reads
    ``Shape(query)`` for the attention bias's Expand, and that second use of the query blocks the
    follow-up rules. Reading those leading axes from the layer input instead is exact and lets them fire.
    ``Attention`` computes Q, K and V with one (D, 3D) product instead of three (D, D) ones. Runs after
    ``last-layer-pruning``: a pruned last layer has a one-row query and must stay unpacked, which
    ``fuse_attention`` respects.
    """

    name = "packed-attention"

    def applicability(self, model: ir.Model) -> str | None:
        if not any(n.op_type == "MultiHeadAttention" for n in model.graph):
            return "no MultiHeadAttention to pack, run ort-fusions first"
        return None

    def rewrite(self, model: ir.Model) -> Rewrite:
        from onnxscript.rewriter.ort_fusions.attention import fuse_attention
        from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias

        moved = _read_shapes_from_projection_inputs(model)
        counts = {"mha_bias": fuse_mha_bias(model), "attention": fuse_attention(model)}
        RemoveUnusedNodesPass()(model)
        return Rewrite(any(counts.values()), {"shape reads moved": moved, "fused": counts})


def _read_shapes_from_projection_inputs(model: ir.Model) -> int:
    """Point each Shape that reads leading axes of a projection, ``[Add(]MatMul(x, W)[, b)]``, at ``x``.

    The MultiHeadAttention fusion builds the attention bias's Expand target from ``Shape(query)[1:2]``.
    That second use of the projected query stops ``fuse_mha_bias`` (Q/K/V biases into the attention node)
    and ``fuse_attention`` (one packed QKV projection). A MatMul by a 2-D weight and a per-feature bias
    keep every axis but the last, so reading those axes from ``x`` is exact.
    """
    moved = 0
    for node in model.graph:
        if node.op_type != "Shape" or not _reads_leading_axes_only(node):
            continue
        source = _projection_input(node.inputs[0])
        if source is not None:
            node.replace_input_with(0, source)
            moved += 1
    return moved


def _reads_leading_axes_only(shape_node: ir.Node) -> bool:
    value_shape = shape_node.inputs[0].shape
    if value_shape is None:
        return False
    rank = len(value_shape)
    start_attr, end_attr = shape_node.attributes.get("start"), shape_node.attributes.get("end")
    start = start_attr.as_int() if start_attr is not None else 0
    end = end_attr.as_int() if end_attr is not None else rank
    start, end = (start + rank if start < 0 else start), (end + rank if end < 0 else end)
    return 0 <= start < end <= rank - 1


def _projection_input(value: ir.Value) -> ir.Value | None:
    """``x`` when ``value`` is ``MatMul(x, W)`` or ``Add(MatMul(x, W), b)``, W 2-D and b per-feature."""
    producer = value.producer()
    if producer is not None and producer.op_type == "Add" and producer.inputs[1].const_value is not None:
        if not _is_feature_bias(producer.inputs[1].const_value, producer.inputs[0]):
            return None
        producer = producer.inputs[0].producer()
    if producer is None or producer.op_type != "MatMul":
        return None
    weight, source = producer.inputs[1].const_value, producer.inputs[0]
    if weight is None or len(weight.shape) != 2 or source.shape is None or len(source.shape) < 2:
        return None
    return source


def _is_feature_bias(bias: ir.TensorProtocol, projected: ir.Value) -> bool:
    """A 1-D bias as long as the projection's last axis: adding it cannot broadcast to a new shape."""
    shape = projected.shape
    return (len(bias.shape) == 1 and shape is not None and len(shape) >= 1
            and isinstance(shape[-1], int) and shape[-1] == bias.shape[0])
