"""Calibration texts: a deterministic sample of any dataset the training data readers accept."""

from __future__ import annotations

import random

from adaret.core.errors import AdaretError
from adaret.training.data import BUILTIN_DATASETS, TextDataset, load_splits

MIN_SAMPLES = 8  # fewer texts than this give activation ranges (and f_l) that one outlier can move
SPLITS = ("train", "eval", "all")


def default_split(data: str) -> str:
    """Built-in sets calibrate on their training split (the eval split stays held out for accuracy); a user's
    file is all calibration data."""
    return "train" if data in BUILTIN_DATASETS else "all"


def calibration_texts(data: str, *, samples: int, split: str | None = None, seed: int = 0) -> TextDataset:
    """``samples`` texts drawn from ``split`` of ``data`` with ``seed``; the same arguments give the same texts."""
    if samples < MIN_SAMPLES:
        raise AdaretError(f"--samples {samples} is too few for calibration; use at least {MIN_SAMPLES}")
    split = split or default_split(data)
    if split not in SPLITS:
        raise AdaretError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    pool = _split(data, split, seed)
    pool = pool.subset([i for i, text in enumerate(pool.texts) if text.strip()], "nonempty")
    if len(pool) == 0:
        raise AdaretError(f"no calibration data: {data} ({split} split) has no non-empty texts")
    if len(pool) < samples:
        raise AdaretError(f"too few calibration samples: {data} ({split} split) has {len(pool)} texts, fewer than "
                          f"--samples {samples}")
    # Shuffled, not the first N: the readers group texts by label, and the first N would be one class.
    chosen = sorted(random.Random(seed).sample(range(len(pool)), samples))
    return pool.subset(chosen, f"calib{samples}")


def _split(data: str, split: str, seed: int) -> TextDataset:
    splits = load_splits(data, seed=seed)
    if split == "train":
        return splits.train
    if split == "eval":
        return splits.eval
    return TextDataset(data, splits.train.texts + splits.eval.texts, splits.train.labels + splits.eval.labels,
                       splits.train.label_names)
