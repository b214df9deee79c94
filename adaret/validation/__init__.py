"""Validation against the PyTorch reference (`adaret validate`) and the side-by-side benchmark (`adaret bench`).

Unlike the runtime, this stage imports torch: the reference is the PyTorch model. Import the submodules
(report, bench, reference) directly; this package imports nothing heavy.
"""
