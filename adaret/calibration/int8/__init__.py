"""INT8 QDQ post-training quantisation of a retained graph: ONNX, onnx-ir and ONNX Runtime only, no torch.

- ``graph``: which nodes are quantised, and which stay fp32 and why (the TopK score path, the head, ...).
- ``smoothing``: SmoothQuant of the planned MatMuls; ``sensitivity``: the MatMuls put back in fp32 until the
  token choices agree with fp32 on the calibration texts.
- ``reader``: calibration batches (texts, or SQuAD questions cut into the export's windows, by its task), padded
  as the runtime pads them (``adaret.core.padding``).
- ``quantize``: the whole flow; the checkpoint's tokenizer, config and digest come from its caller
  (``adaret.calibration.checkpoint``), so that nothing here loads transformers.
- ``record``: the JSON record next to the INT8 model; ``verify``: fp32 vs INT8 predictions (labels, or decoded answer
  spans with EM/F1) and token agreement.
"""
