"""ONNX Runtime contrib-op fusions from ``onnxscript.rewriter.ort_fusions``."""

from __future__ import annotations

import onnx_ir as ir

from adaret.graph_passes.base import GraphPass, Rewrite


class TransformerFusionPass(GraphPass):
    """ONNX Runtime contrib-op fusions from ``onnxscript.rewriter.ort_fusions``.

    They fire on the dynamo-exported graph, in the retained layers after TopK/Gather as well:
    MultiHeadAttention, SkipLayerNormalization and BiasGelu. (The ``onnxruntime.transformers`` optimizer was
    tried too: it matches the legacy exporter's patterns and fuses no attention here.) The result needs ONNX
    Runtime, so TensorRT targets do not run this pass.
    """

    name = "ort-fusions"

    def rewrite(self, model: ir.Model) -> Rewrite:
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        fused_model, counts = optimize_for_ort(model)
        if fused_model is not model:
            raise RuntimeError("optimize_for_ort did not rewrite in place")
        return Rewrite(any(counts.values()), {"fused": {k: v for k, v in counts.items() if v}})
