"""Serving an export with Triton Inference Server: ``adaret serve`` (the bundled server, Python-backend models over
an ``adaret.runtime`` Session) and ``adaret triton-repo`` (a model repository for a datacenter Triton).

Torch-free like the runtime it serves. See docs/serving.md.
"""
