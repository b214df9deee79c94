"""On CPU, undo the SkipLayerNormalization fusion: ``LayerNormalization(x + skip [+ bias])``."""

from __future__ import annotations

import onnx_ir as ir

from adaret.graph_passes.base import GraphPass, Rewrite, substitute


class SplitSkipLayerNormPass(GraphPass):
    """On CPU, undo the SkipLayerNormalization fusion: ``LayerNormalization(x + skip [+ bias])``.

    ONNX Runtime 1.32's CPU SkipLayerNormalization kernel is slower than the three ops it replaces: 544 us
    against 138 us on (1, 512, 384) float32 with 2 threads (``benchmarks/skip_layernorm.py``). ONNX
    Runtime's own session-level fusion does not re-fuse this form. Only the normalised output may be in
    use; the mean, inverse std-dev and sum outputs have no counterpart here.
    """

    name = "split-skip-layernorm"

    def rewrite(self, model: ir.Model) -> Rewrite:
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
            substitute(model, node, [*adds, norm])
            split += 1
        return Rewrite(split > 0, {"split": split})

    def ensures(self, model: ir.Model) -> None:
        if any(_is_plain_skip_layernorm(n) for n in model.graph):
            raise ir.passes.PostconditionError("a SkipLayerNormalization is left")


def _is_plain_skip_layernorm(node: ir.Node) -> bool:
    if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft" or len(node.inputs) < 4:
        return False
    return node.inputs[3] is not None and not any(o.uses() for o in node.outputs[1:])
