"""Calibration: the per-layer keep schedule from data, and INT8 QDQ post-training quantisation.

- ``schedule``: re-measure f_l on any dataset and write it into a checkpoint (no retraining), with a plot.
- ``quantize``: ONNX Runtime (or ModelOpt) QDQ INT8 of an export, TopK score path kept fp32 (``graph``),
  after SmoothQuant (``smoothing``), with sensitive MatMuls put back in fp32 until the token choices agree
  with fp32 on the calibration texts (``sensitivity``).
- ``record``: the JSON record next to the INT8 model; ``verify``: fp32 vs INT8 accuracy and token agreement.

Submodules are imported on use; this package imports nothing heavy.
"""
