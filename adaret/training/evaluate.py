"""Accuracy of the full, relaxed and hard top-M models, and the keep schedule measured on data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from adaret.modeling import KeepSchedule, RetentionModel, layer_keep_fractions
from adaret.training.batching import Encoded


@dataclass
class RelaxedEval:
    accuracy: float
    keep_fractions: list[float]  # per layer, mean over examples of E[kept real tokens] / real tokens

    @property
    def budget(self) -> float:
        return sum(self.keep_fractions) / len(self.keep_fractions)


@torch.no_grad()
def evaluate_relaxed(model: RetentionModel, data: Encoded, batch_size: int = 8, progress: bool = True) -> RelaxedEval:
    """Deterministic gates (eval mode): accuracy and the per-layer keep fractions f_l."""
    model.eval()
    correct, weighted, count = 0, None, 0
    for batch in tqdm(data.batches(batch_size), total=data.num_batches(batch_size), desc="eval relaxed",
                      leave=False, disable=not progress):
        out = model(**batch.inputs, mode="relaxed")
        correct += int((out.logits.argmax(-1) == batch.labels).sum())
        fractions = layer_keep_fractions(out.expected_masks, batch.attention_mask.float()) * len(batch.labels)
        weighted = fractions if weighted is None else weighted + fractions
        count += len(batch.labels)
    return RelaxedEval(correct / count, (weighted / count).tolist())


@torch.no_grad()
def accuracy(model: RetentionModel, data: Encoded, *, mode: str, schedule: KeepSchedule | None = None,
             batch_size: int = 8) -> float:
    """Accuracy in ``full`` mode (no retention) or ``hard`` mode (top-M at ``schedule``)."""
    model.eval()
    correct = 0
    for batch in tqdm(data.batches(batch_size), total=data.num_batches(batch_size), desc=f"eval {mode}",
                      leave=False):
        logits = model(**batch.inputs, mode=mode, schedule=schedule).logits
        correct += int((logits.argmax(-1) == batch.labels).sum())
    return correct / len(data)
