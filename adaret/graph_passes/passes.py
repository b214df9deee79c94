"""The graph passes, in the order a pipeline usually runs them."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import (
    CommonSubexpressionEliminationPass,
    DeduplicateInitializersPass,
    RemoveUnusedNodesPass,
    RemoveUnusedOpsetsPass,
)

from adaret.graph_passes.base import GraphPass, metadata, op_histogram

ORDER_INVARIANT_POOLINGS = ("cls", "cls_mean")  # both read CLS and/or a sum over tokens, never their order


class FoldConstantsPass(GraphPass):
    """Constant folding and shape-arithmetic simplification (onnxscript's optimizer).

    In a static graph every K_l is a constant after this; in a dynamic graph the K arithmetic on the
    input's Shape stays, simplified.
    """

    name = "fold-constants"

    def rewrite(self, model: ir.Model) -> bool:
        import onnxscript.optimizer

        before = op_histogram(model)
        onnxscript.optimizer.optimize_ir(model)
        return op_histogram(model) != before


class CleanupPass(GraphPass):
    """Dead code, duplicate initializers, common subexpressions and unused opsets (onnx-ir common passes)."""

    name = "cleanup"

    def rewrite(self, model: ir.Model) -> bool:
        passes = [CommonSubexpressionEliminationPass(), DeduplicateInitializersPass(), RemoveUnusedNodesPass(),
                  RemoveUnusedOpsetsPass()]
        modified = False
        for p in passes:
            modified |= p(model).modified
        return modified


class TransformerFusionPass(GraphPass):
    """ONNX Runtime contrib-op fusions from ``onnxscript.rewriter.ort_fusions``.

    They fire on the dynamo-exported graph, in the retained layers after TopK/Gather as well:
    MultiHeadAttention, SkipLayerNormalization and BiasGelu. (The ``onnxruntime.transformers`` optimizer was
    tried too: it matches the legacy exporter's patterns and fuses no attention here.) The result needs ONNX
    Runtime, so TensorRT targets do not run this pass.
    """

    name = "ort-fusions"

    def rewrite(self, model: ir.Model) -> bool:
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        fused_model, counts = optimize_for_ort(model)
        if fused_model is not model:
            raise RuntimeError("optimize_for_ort did not rewrite in place")
        self.details = {"fused": {k: v for k, v in counts.items() if v}}
        return any(counts.values())


class OrderRestoreEliminationPass(GraphPass):
    """Drop the ascending sort of kept indices when the head cannot see token order.

    The exported graph keeps the survivors in original order: TopK(scores) -> indices, then an ascending
    TopK(indices, largest=0). Absolute positions were already added at the embeddings and attention is
    permutation-equivariant, so for a head that reads CLS and/or a sum over tokens the order is
    irrelevant (CLS stays first: its forced score is the largest). A token-level head needs the order, so
    the pass applies only when the metadata records an order-invariant pooling.
    """

    name = "order-restore-elimination"

    def applicability(self, model: ir.Model) -> str | None:
        pooling = metadata(model, "pooling")
        if pooling not in ORDER_INVARIANT_POOLINGS:
            return f"head pooling {pooling!r} may depend on token order"
        return None

    def rewrite(self, model: ir.Model) -> bool:
        outputs = set(model.graph.outputs)
        removed = 0
        for node in list(model.graph):
            if not _is_ascending_topk_of_indices(node) or node.outputs[1].uses() or node.outputs[0] in outputs:
                continue
            ir.convenience.replace_all_uses_with(node.outputs[0], node.inputs[0])
            model.graph.remove(node, safe=True)
            removed += 1
        self.details = {"sorts removed": removed}
        return removed > 0

    def ensures(self, model: ir.Model) -> None:
        if self.skipped is None and any(_is_ascending_topk_of_indices(n) and not n.outputs[1].uses()
                                        for n in model.graph):
            raise ir.passes.PostconditionError("an order-restoring TopK is left")


def _is_ascending_topk_of_indices(node: ir.Node) -> bool:
    if node.op_type != "TopK" or node.domain not in ("", "ai.onnx"):
        return False
    largest = node.attributes.get("largest")
    if largest is None or largest.as_int() != 0:
        return False
    producer = node.inputs[0].producer() if node.inputs[0] is not None else None
    return producer is not None and producer.op_type == "TopK" and node.inputs[0] is producer.outputs[1]


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

    def rewrite(self, model: ir.Model) -> bool:
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
        self.details = {"rows kept in last layer": 1}
        return True


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


class Float16Pass(GraphPass):
    """FP16 weights and activations for GPU targets, keeping fp32 where precision decides the result.

    Kept in fp32: LayerNormalization and SkipLayerNormalization (variance accumulation), Softmax
    (exp-sum accumulation), the reductions of the mean pool, the head, and the whole gate-scorer path up
    to TopK, so that the choice of tokens is made on fp32 scores. Graph inputs and outputs keep their
    types. Conversion is ``onnxruntime.transformers.float16``.
    """

    name = "fp16"
    parity_tolerance = 2e-2  # fp16 has ~3 significant digits; 6 layers put logits ~1e-3 off, 20x margin
    KEEP_FP32_OPS = ("LayerNormalization", "SkipLayerNormalization", "Softmax", "TopK", "ReduceSum", "Range",
                     "Where", "Cast", "Gemm", "Div")

    @property
    def in_place(self) -> bool:  # the converter builds a new model
        return False

    @property
    def changes_input(self) -> bool:
        return False

    def rewrite(self, model: ir.Model) -> bool:  # pragma: no cover - replaced by call()
        raise NotImplementedError

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        self.details, self.skipped = {}, None
        keep_nodes = sorted(_gate_scorer_nodes(model))
        proto = convert_float_to_float16(ir.serde.serialize_model(model), keep_io_types=True,
                                         op_block_list=list(self.KEEP_FP32_OPS), node_block_list=keep_nodes)
        self.details = {"fp32 gate-scorer nodes": len(keep_nodes)}
        return ir.passes.PassResult(ir.serde.deserialize_model(proto), modified=True)


def _gate_scorer_nodes(model: ir.Model) -> set[str]:
    """Names of the nodes between each gate's LayerNormalization and the TopK that ranks its scores."""
    names: set[str] = set()
    for node in model.graph:
        if node.op_type != "TopK" or _is_ascending_topk_of_indices(node):
            continue
        pending = [node.inputs[0]]
        while pending:
            producer = pending.pop().producer() if pending[-1] is not None else None
            if producer is None or producer.name in names:
                continue
            names.add(producer.name)
            if producer.op_type != "LayerNormalization":
                pending.extend(i for i in producer.inputs if i is not None and i.producer() is not None
                               and i.const_value is None)
    return names
