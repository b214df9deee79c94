"""Drop the ascending sort of kept indices when the head cannot see token order."""

from __future__ import annotations

import onnx_ir as ir

from adaret.graph_passes.base import GraphPass, Rewrite, metadata

ORDER_INVARIANT_POOLINGS = ("cls", "cls_mean")  # both read CLS and/or a sum over tokens, never their order

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

    def rewrite(self, model: ir.Model) -> Rewrite:
        outputs = set(model.graph.outputs)
        removed = 0
        for node in list(model.graph):
            if not _is_ascending_topk_of_indices(node) or node.outputs[1].uses() or node.outputs[0] in outputs:
                continue
            ir.convenience.replace_all_uses_with(node.outputs[0], node.inputs[0])
            model.graph.remove(node, safe=True)
            removed += 1
        return Rewrite(removed > 0, {"sorts removed": removed})

    def ensures(self, model: ir.Model) -> None:
        if self.applicability(model) is None and any(_is_ascending_topk_of_indices(n) and not n.outputs[1].uses()
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
