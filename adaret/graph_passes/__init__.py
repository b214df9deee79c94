"""ONNX graph passes over onnx-ir that fold, fuse and prune the retained path (``adaret optimize``).

Each pass states what it requires and ensures and reports what it changed; ``pipeline.optimize`` runs a
target's list and checks parity with ONNX Runtime after every pass. See docs/results.md for what they gain.
"""
