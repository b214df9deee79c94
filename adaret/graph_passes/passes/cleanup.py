"""Dead code, duplicate initializers, common subexpressions and unused opsets (onnx-ir common passes)."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes.common import (
    CommonSubexpressionEliminationPass,
    DeduplicateInitializersPass,
    RemoveUnusedNodesPass,
    RemoveUnusedOpsetsPass,
)

from adaret.graph_passes.base import GraphPass, Rewrite


class CleanupPass(GraphPass):
    """Dead code, duplicate initializers, common subexpressions and unused opsets (onnx-ir common passes)."""

    name = "cleanup"

    def rewrite(self, model: ir.Model) -> Rewrite:
        passes = [CommonSubexpressionEliminationPass(), DeduplicateInitializersPass(), RemoveUnusedNodesPass(),
                  RemoveUnusedOpsetsPass()]
        modified = False
        for p in passes:
            modified |= p(model).modified
        return Rewrite(modified)
