"""Gather kept rows with ``GatherND(batch_dims=1)`` instead of an expanded ``GatherElements``."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from adaret.graph_passes.base import GraphPass, Rewrite, substitute


class RowGatherPass(GraphPass):
    """Gather kept rows with ``GatherND(batch_dims=1)`` instead of an expanded ``GatherElements``.

    ``torch.gather`` exports the row gather after each TopK as
    ``GatherElements(h, Expand(Unsqueeze(order, -1), [B, K, D]), axis=1)``: the int64 index is first
    broadcast to the full (B, K, D) size, then read element by element. ``GatherND(h, Unsqueeze(order, -1),
    batch_dims=1)`` takes whole rows by a (B, K, 1) index and selects exactly the same elements.
    """

    name = "row-gather"

    def rewrite(self, model: ir.Model) -> Rewrite:
        replaced = 0
        outputs = set(model.graph.outputs)
        for node in list(model.graph):
            row_index = _expanded_row_index(node)
            if row_index is None or node.outputs[0] in outputs:
                continue
            substitute(model, node, [ir.node("GatherND", [node.inputs[0], row_index], attributes={"batch_dims": 1},
                                              name=f"{node.name}_rows")])
            replaced += 1
        RemoveUnusedNodesPass()(model)
        return Rewrite(replaced > 0, {"row gathers": replaced})

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
