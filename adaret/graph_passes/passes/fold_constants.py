"""Constant folding and shape-arithmetic simplification (onnxscript's optimizer)."""

from __future__ import annotations

import onnx_ir as ir

from adaret.graph_passes.base import GraphPass, Rewrite, op_histogram


class FoldConstantsPass(GraphPass):
    """Constant folding and shape-arithmetic simplification (onnxscript's optimizer).

    In a static graph every K_l is a constant after this; in a dynamic graph the K arithmetic on the
    input's Shape stays, simplified.
    """

    name = "fold-constants"

    def rewrite(self, model: ir.Model) -> Rewrite:
        import onnxscript.optimizer

        before = op_histogram(model)
        onnxscript.optimizer.optimize_ir(model)
        return Rewrite(op_histogram(model) != before)
