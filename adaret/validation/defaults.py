"""Thresholds and defaults of `adaret validate` (a light module: the CLI parser reads them on every call)."""

DEFAULT_BUDGETS = (0.3, 0.4, 0.5, 1.0)
# ONNX Runtime against PyTorch, both fp32, on real text: differences are ~1e-5 unless a near-tie flips one token's
# rank, which moves a logit by ~1e-2; 1e-3 fails on any systematic disagreement and tolerates float reordering.
DEFAULT_PARITY_TOLERANCE = 1e-3
DEFAULT_TRT_TOLERANCE = 5e-2  # an fp16 engine against fp32 PyTorch
# The paper's claim: keeping 30-50% of tokens preserves >= 95% of full-model performance.
DEFAULT_ACCURACY_FLOOR = 0.95
