"""The shared layer: what every stage may import, and which imports no stage.

Nothing here imports torch or transformers at module level, so the edge runtime and the graph passes can
use all of it. The import-linter contracts in ``pyproject.toml`` enforce both rules in CI.
"""
