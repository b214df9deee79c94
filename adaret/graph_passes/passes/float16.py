"""FP16 weights and activations for GPU targets, keeping fp32 where precision decides the result."""

from __future__ import annotations

import onnx_ir as ir

from adaret.core import graph_facts as gf
from adaret.graph_passes.base import GraphPassResult


class Float16Pass(ir.passes.FunctionalPass):
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

    def call(self, model: ir.Model) -> GraphPassResult:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        keep_nodes = gf.score_path_node_names(model)  # the same nodes the TensorRT builder pins to fp32
        proto = convert_float_to_float16(ir.serde.serialize_model(model), keep_io_types=True,
                                         op_block_list=list(self.KEEP_FP32_OPS), node_block_list=keep_nodes)
        return GraphPassResult(ir.serde.deserialize_model(proto), modified=True,
                               details={"fp32 score-path nodes": len(keep_nodes)})
