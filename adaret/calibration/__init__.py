"""Calibration, split by what each half touches.

- ``schedule``: re-measure the per-layer keep fractions f_l of a checkpoint on any dataset and write them into
  the checkpoint (no retraining), with a plot. It runs the model, so it is the torch side.
- ``int8``: INT8 QDQ post-training quantisation of an exported graph with ONNX Runtime (or ModelOpt): the TopK
  score path kept fp32, SmoothQuant, the agreement search, the record and fp32-vs-INT8 verification. It imports
  neither torch nor transformers (checked by import-linter); what it needs from the checkpoint it is handed.
- ``checkpoint``: reads that from the checkpoint (its checked config, tokenizer and digest; never its weights)
  and hands it to ``int8``; ``quantize`` here is the INT8 calibration of an export from its checkpoint.
- ``data``: the calibration texts (or SQuAD questions) and batching checks both halves share (plain Python).
- ``cli``: ``adaret calibrate`` on top of all of them.

Submodules are imported on use; this package imports nothing heavy.
"""
