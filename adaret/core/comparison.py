"""How two backends' outputs are compared: one rule for the export's parity gate and the graph passes' probe."""

from __future__ import annotations

import numpy as np


def max_abs_diff(got: np.ndarray, want: np.ndarray, attention_mask: np.ndarray) -> float:
    """The largest |got - want|; a per-position output ([batch, sequence], e.g. a start logit) counts only at real
    positions, because nothing reads a padding slot's value and its state is not defined by the model."""
    diff = np.abs(np.asarray(got, dtype=np.float64) - np.asarray(want, dtype=np.float64))
    if diff.shape == attention_mask.shape:
        diff = diff[attention_mask == 1]
    return float(diff.max()) if diff.size else 0.0
