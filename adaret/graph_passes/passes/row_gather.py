"""Gather kept rows with ``GatherND(batch_dims=1)`` instead of an expanded ``GatherElements``."""

from __future__ import annotations

import onnx_ir as ir

from adaret.graph_passes.base import RulePass, expands_whole_rows


class RowGatherPass(RulePass):
    """Gather kept rows with ``GatherND(batch_dims=1)`` instead of an expanded ``GatherElements``.

    ``torch.gather`` exports the row gather after each TopK as
    ``GatherElements(h, Expand(Unsqueeze(order, -1), [B, K, D]), axis=1)``: the int64 index is first
    broadcast to the full (B, K, D) size, then read element by element. ``GatherND(h, Unsqueeze(order, -1),
    batch_dims=1)`` takes whole rows by a (B, K, 1) index and selects exactly the same elements.

    The match is an ``onnxscript.rewriter`` rule: the target pattern is the GatherElements over an Expand,
    its check admits only an Expand that broadcasts the feature axis alone, and never a gather whose output
    is a graph output.
    """

    name = "row-gather"
    counted = "row gathers"
    left = "an expanded row GatherElements"

    def rules(self) -> list:
        from onnxscript.rewriter.pattern import RewriteRule

        # remove_nodes=False: an Expand that also feeds another consumer must not stop the rewrite. Such a rule
        # makes the rule set end with a sweep of unused nodes, which drops the replaced gathers and their Expands.
        return [RewriteRule(_target, _replacement, _check, name=self.name, remove_nodes=False)]


def _target(op, data, index, shape):
    return op.GatherElements(data, op.Expand(index, shape, _outputs=["expanded"]), axis=1, _outputs=["gathered"])


def _check(context, data: ir.Value, index: ir.Value, expanded: ir.Value, gathered: ir.Value, **_) -> bool:
    """True when the gather reads whole rows of a (B, n, D) tensor: the Expand broadcasts a (B, K, 1) index
    along the feature axis only."""
    if gathered.is_graph_output():
        return False
    return expands_whole_rows(data, index, expanded)


def _replacement(op, data: ir.Value, index: ir.Value, gathered: ir.Value, **_) -> ir.Value:
    return op.GatherND(data, index, batch_dims=1, _name=f"{gathered.producer().name}_rows")
