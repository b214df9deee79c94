"""Numbers that several stages must agree on, each stated once with its reason."""

from __future__ import annotations

# fp32 logits through ~6 layers of MatMul/Softmax/LayerNorm: ONNX Runtime's kernels reorder sums, so results
# differ at ~1e-6 relative to the activations; 1e-4 absolute leaves two orders of magnitude of margin while
# still catching any wrong token choice or a missed mask, which move logits by 1e-2 or more.
DEFAULT_TOLERANCE = 1e-4
# Opset 17 through the dynamo exporter produces invalid Split nodes.
MIN_OPSET = 18
# protobuf cannot serialise a single message above 2 GiB; leave headroom for the graph itself.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000
# ONNX Runtime CPU allocator settings the runtime knows (adaret.runtime.options says what each does). Here, not there,
# so that command-line parsers can offer them without importing onnxruntime.
MEMORY_MODES = ("no-arena", "arena", "arena-same-as-requested")
DEFAULT_MEMORY_MODE = "no-arena"
