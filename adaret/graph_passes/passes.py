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

    def rewrite(self, model: ir.Model) -> bool:
        from onnxscript.rewriter.ort_fusions.attention import fuse_attention
        from onnxscript.rewriter.ort_fusions.mha_bias import fuse_mha_bias

        moved = _read_shapes_from_projection_inputs(model)
        counts = {"mha_bias": fuse_mha_bias(model), "attention": fuse_attention(model)}
        RemoveUnusedNodesPass()(model)
        self.details = {"shape reads moved": moved, "fused": counts}
        return any(counts.values())


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


class SplitSkipLayerNormPass(GraphPass):
    """On CPU, undo the SkipLayerNormalization fusion: ``LayerNormalization(x + skip [+ bias])``.

    ONNX Runtime 1.32's CPU SkipLayerNormalization kernel is slower than the three ops it replaces: 544 us
    against 138 us on (1, 512, 384) float32 with 2 threads (``benchmarks/skip_layernorm.py``). ONNX
    Runtime's own session-level fusion does not re-fuse this form. Only the normalised output may be in
    use; the mean, inverse std-dev and sum outputs have no counterpart here.
    """

    name = "split-skip-layernorm"

    def rewrite(self, model: ir.Model) -> bool:
        split = 0
        for node in list(model.graph):
            if not _is_plain_skip_layernorm(node):
                continue
            x, skip, gamma, beta, *bias = node.inputs
            summed = ir.node("Add", [x, skip], name=f"{node.name}_add")
            adds = [summed]
            if bias and bias[0] is not None:
                adds.append(ir.node("Add", [summed.outputs[0], bias[0]], name=f"{node.name}_bias"))
            epsilon = node.attributes.get("epsilon")
            norm = ir.node("LayerNormalization", [adds[-1].outputs[0], gamma, beta], name=f"{node.name}_norm",
                           attributes={"axis": -1, "epsilon": epsilon.as_float() if epsilon else 1e-12})
            _substitute(model, node, [*adds, norm])
            split += 1
        self.details = {"split": split}
        return split > 0

    def ensures(self, model: ir.Model) -> None:
        if any(_is_plain_skip_layernorm(n) for n in model.graph):
            raise ir.passes.PostconditionError("a SkipLayerNormalization is left")


def _substitute(model: ir.Model, node: ir.Node, replacement: list[ir.Node]) -> None:
    """Put ``replacement`` where ``node`` was; the last replacement node's output takes over node's output."""
    output = replacement[-1].outputs[0]
    output.shape, output.dtype = node.outputs[0].shape, node.outputs[0].dtype
    model.graph.insert_before(node, replacement)
    ir.convenience.replace_all_uses_with(node.outputs[0], output)
    model.graph.remove(node, safe=True)


def _is_plain_skip_layernorm(node: ir.Node) -> bool:
    if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft" or len(node.inputs) < 4:
        return False
    return node.inputs[3] is not None and not any(o.uses() for o in node.outputs[1:])


class RowGatherPass(GraphPass):
    """Gather kept rows with ``GatherND(batch_dims=1)`` instead of an expanded ``GatherElements``.

    ``torch.gather`` exports the row gather after each TopK as
    ``GatherElements(h, Expand(Unsqueeze(order, -1), [B, K, D]), axis=1)``: the int64 index is first
    broadcast to the full (B, K, D) size, then read element by element. ``GatherND(h, Unsqueeze(order, -1),
    batch_dims=1)`` takes whole rows by a (B, K, 1) index and selects exactly the same elements.
    """

    name = "row-gather"

    def rewrite(self, model: ir.Model) -> bool:
        replaced = 0
        outputs = set(model.graph.outputs)
        for node in list(model.graph):
            row_index = _expanded_row_index(node)
            if row_index is None or node.outputs[0] in outputs:
                continue
            _substitute(model, node, [ir.node("GatherND", [node.inputs[0], row_index], attributes={"batch_dims": 1},
                                              name=f"{node.name}_rows")])
            replaced += 1
        RemoveUnusedNodesPass()(model)
        self.details = {"row gathers": replaced}
        return replaced > 0

    def ensures(self, model: ir.Model) -> None:
        if any(_expanded_row_index(n) is not None for n in model.graph if n.outputs[0] not in model.graph.outputs):
            raise ir.passes.PostconditionError("an expanded row GatherElements is left")


def _expanded_row_index(node: ir.Node) -> ir.Value | None:
    """The (B, K, 1) index when ``node`` gathers whole rows of a (B, n, D) tensor through an Expand."""
    if node.op_type != "GatherElements" or node.domain not in ("", "ai.onnx"):
        return None
    axis = node.attributes.get("axis")
    expand = node.inputs[1].producer()
    if axis is None or axis.as_int() != 1 or expand is None or expand.op_type != "Expand":
        return None
    data, index, expanded = node.inputs[0].shape, expand.inputs[0].shape, expand.outputs[0].shape
    if data is None or index is None or expanded is None or not len(data) == len(index) == len(expanded) == 3:
        return None
    only_features_broadcast = (index[2] == 1 and expanded[0] == index[0] and expanded[1] == index[1]
                               and isinstance(data[2], int) and expanded[2] == data[2])
    return expand.inputs[0] if only_features_broadcast else None


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
