"""When the head reads only CLS, the last layer needs queries, attention output and FFN for row 0 only."""

from __future__ import annotations

import onnx_ir as ir

from adaret.graph_passes.base import GraphPass, Rewrite, metadata


class LastLayerPruningPass(GraphPass):
    """When the head reads only CLS, the last layer needs queries, attention output and FFN for row 0 only.

    Keys and values still see every kept token. The pass slices the last layer's query-side input to its
    first row (CLS stays first through every TopK: its forced score is the largest): the Q projection, the
    attention bias rows, the residual of the first SkipLayerNormalization and, through them, the output
    projection and the FFN all shrink from K_L rows to one. It works on the fused form (after
    ``ort-fusions``), where the last layer is one MultiHeadAttention between SkipLayerNormalizations.
    """

    name = "last-layer-pruning"

    def applicability(self, model: ir.Model) -> str | None:
        if metadata(model, "pooling") != "cls":
            return f"head reads more than CLS (pooling {metadata(model, 'pooling')!r})"
        if _last_layer(model) is None:
            return "needs the fused form (MultiHeadAttention + SkipLayerNormalization), run ort-fusions first"
        output = _last_layer(model)["output"]
        if not all(_is_row0_gather(use.node) for use in output.uses()) or output in set(model.graph.outputs):
            return "the last layer's hidden states are read beyond the CLS row"
        return None

    def rewrite(self, model: ir.Model) -> Rewrite:
        layer = _last_layer(model)
        assert layer is not None
        hidden = layer["q_matmul"].inputs[0]
        row0 = _insert_slice(model, hidden, axis=1, before=layer["q_matmul"])
        layer["q_matmul"].replace_input_with(0, row0)
        layer["skip_ln"].replace_input_with(layer["skip_index"], row0)
        mha = layer["mha"]
        if len(mha.inputs) > 5 and mha.inputs[5] is not None:  # attention_bias [B, N|1, S_q, S_kv]
            mha.replace_input_with(5, _insert_slice(model, mha.inputs[5], axis=2, before=mha))
        _forget_shapes_downstream_of(row0)
        return Rewrite(True, {"rows kept in last layer": 1})


def _last_layer(model: ir.Model) -> dict | None:
    nodes = list(model.graph)
    attention = [n for n in nodes if n.op_type == "MultiHeadAttention"]
    skip_lns = [n for n in nodes if n.op_type == "SkipLayerNormalization"]
    if not attention or len(skip_lns) < 2:
        return None
    mha = attention[-1]
    q = mha.inputs[0].producer()
    if q is not None and q.op_type == "Add":
        q = next((i.producer() for i in q.inputs if i is not None and i.producer() is not None), None)
    if q is None or q.op_type != "MatMul":
        return None
    hidden = q.inputs[0]
    residual = [(use.node, use.idx) for use in hidden.uses() if use.node.op_type == "SkipLayerNormalization"]
    if len(residual) != 1:
        return None
    skip_ln, skip_index = residual[0]
    return {"mha": mha, "q_matmul": q, "skip_ln": skip_ln, "skip_index": skip_index,
            "output": skip_lns[-1].outputs[0]}


def _forget_shapes_downstream_of(value: ir.Value) -> None:
    """Shapes recorded for the old, K_L-row tensors are now wrong; drop them so runtimes re-infer."""
    outputs = set()
    pending, seen = [value], set()
    while pending:
        for use in pending.pop().uses():
            if use.node in seen:
                continue
            seen.add(use.node)
            for out in use.node.outputs:
                outputs.add(out)
                pending.append(out)
    for out in outputs:
        if not out.is_graph_output():
            out.shape = None


def _is_row0_gather(node: ir.Node) -> bool:
    if node.op_type != "Gather" or node.attributes.get("axis") is None or node.attributes["axis"].as_int() != 1:
        return False
    index = node.inputs[1].const_value if node.inputs[1] is not None else None
    return index is not None and index.numpy().size == 1 and int(index.numpy().reshape(-1)[0]) == 0


def _insert_slice(model: ir.Model, value: ir.Value, axis: int, before: ir.Node) -> ir.Value:
    def const(name: str, number: int) -> ir.Value:
        tensor = ir.tensor([number], dtype=ir.DataType.INT64, name=f"{value.name}_{name}")
        v = ir.Value(name=tensor.name, const_value=tensor, shape=ir.Shape([1]), type=ir.TensorType(ir.DataType.INT64))
        model.graph.register_initializer(v)
        return v

    node = ir.node("Slice", [value, const("row0_start", 0), const("row0_end", 1), const("row0_axis", axis)],
                   name=f"{value.name}_row0")
    node.outputs[0].name = f"{value.name}_row0"
    model.graph.insert_before(before, node)
    return node.outputs[0]
