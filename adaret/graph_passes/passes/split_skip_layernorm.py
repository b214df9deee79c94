"""On CPU, undo the SkipLayerNormalization fusion: ``LayerNormalization(x + skip [+ bias])``."""

from __future__ import annotations

import onnx_ir as ir

from adaret.graph_passes.base import RulePass


class SplitSkipLayerNormPass(RulePass):
    """On CPU, undo the SkipLayerNormalization fusion: ``LayerNormalization(x + skip [+ bias])``.

    ONNX Runtime 1.32's CPU SkipLayerNormalization kernel is slower than the three ops it replaces
    (``benchmarks/skip_layernorm.py``; docs/results.md has the numbers). ONNX
    Runtime's own session-level fusion does not re-fuse this form. Only the normalised output may be in
    use; the mean, inverse std-dev and sum outputs have no counterpart here.

    The match is an ``onnxscript.rewriter`` rule: the target pattern is a com.microsoft
    SkipLayerNormalization with or without its bias; the rewriter itself refuses a node whose mean, inverse
    std-dev or sum output is read or is a graph output, since the rule replaces only the normalised output.
    """

    name = "split-skip-layernorm"
    counted = "split"
    left = "a SkipLayerNormalization"

    def rules(self) -> list:
        from onnxscript.rewriter.pattern import RewriteRule

        return [RewriteRule(_target, _replacement, name=self.name)]


def _target(op, x, skip, gamma, beta):
    from onnxscript.rewriter.pattern import AttrVar, Var

    return op.SkipLayerNormalization(x, skip, gamma, beta, Var("bias", can_match_none=True), _domain="com.microsoft",
                                     epsilon=AttrVar("epsilon", can_match_none=True), _outputs=["normalized"])


def _replacement(op, x: ir.Value, skip: ir.Value, gamma: ir.Value, beta: ir.Value, bias: ir.Value | None,
                 epsilon: ir.Attr | None, normalized: ir.Value) -> ir.Value:
    name = normalized.producer().name
    summed = op.Add(x, skip, _name=f"{name}_add")
    if bias is not None:
        summed = op.Add(summed, bias, _name=f"{name}_bias")
    return op.LayerNormalization(summed, gamma, beta, axis=-1, epsilon=epsilon.as_float() if epsilon else 1e-12,
                                 _name=f"{name}_norm")
