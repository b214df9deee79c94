"""Datasets, the two-timescale SGDA training loop, evaluation and checkpoints."""
