"""Drop the ascending sort of kept indices when the head cannot see token order."""

from __future__ import annotations

import onnx_ir as ir

from adaret.core.io_spec import QUESTION_ANSWERING
from adaret.graph_passes.base import RulePass, metadata

ORDER_INVARIANT_POOLINGS = ("cls", "cls_mean")  # both read CLS and/or a sum over tokens, never their order

class OrderRestoreEliminationPass(RulePass):
    """Drop the ascending sort of kept indices when the head cannot see token order.

    The exported graph keeps the survivors in original order: TopK(scores) -> indices, then an ascending
    TopK(indices, largest=0). Absolute positions were already added at the embeddings and attention is
    permutation-equivariant, so for a head that reads CLS and/or a sum over tokens the order is
    irrelevant (CLS stays first: its forced score is the largest). The question-answering span head is
    order-invariant too: it reads the states scattered back to their original positions (the kept positions
    travel with the states). Any other token-level head may need the order, so the pass applies only when the
    metadata records one of these heads.

    The match is an ``onnxscript.rewriter`` rule: the target pattern is the ascending TopK, its check
    requires the indices output of another TopK as its input and an output that is not a graph output; the
    rewriter itself refuses a sort whose own indices output is read.
    """

    name = "order-restore-elimination"
    counted = "sorts removed"
    left = "an order-restoring TopK"

    def applicability(self, model: ir.Model) -> str | None:
        if metadata(model, "task") == QUESTION_ANSWERING.task:
            return None
        pooling = metadata(model, "pooling")
        if pooling not in ORDER_INVARIANT_POOLINGS:
            return f"head pooling {pooling!r} may depend on token order"
        return None

    def rules(self) -> list:
        from onnxscript.rewriter.pattern import RewriteRule

        return [RewriteRule(_target, _replacement, _check, name=self.name)]


def _target(op, order, k):
    return op.TopK(order, k, largest=0, _outputs=["restored"])


def _check(context, order: ir.Value, restored: ir.Value, **_) -> bool:
    """True when ``order`` is the indices output of a TopK, and the sorted order is not itself a graph output
    (there the caller sees the order, so it must stay)."""
    producer = order.producer()
    return (producer is not None and producer.op_type == "TopK" and order is producer.outputs[1]
            and not restored.is_graph_output())


def _replacement(op, order: ir.Value, **_) -> ir.Value:
    return order
