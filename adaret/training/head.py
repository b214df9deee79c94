"""The task head: fitted on the full model first, then re-fitted on what the deployed rule computes.

The head is a linear layer on pooled features ([CLS ; mean] by default), so fitting it is a convex problem
solved full-batch on features computed once. Two fits use it:

1. Warm-up, on the *full* model's features. This is the reference "same backbone and head, no retention",
   and its logits on the training set are the teacher of gate training.
2. Re-fit, on the features the *deployed* hard top-M rule produces, at the target budget and around it
   (``b - spread``, ``b``, ``b + spread``, and 1.0). Gate training optimises the relaxed model with the
   warm-up head frozen, but deployment runs hard top-M, whose pooled features are shifted: in hard mode
   a dropped token enters the mean with the state it had when it was dropped, from an earlier layer. A
   linear head re-fitted on those features (from the warm-up head, with the same distillation to the full
   model) absorbs that shift. Fitting on several budgets keeps one head valid across the budgets a user
   exports at, since the budget is a deployment knob.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from adaret.modeling import KeepSchedule, RetentionModel
from adaret.modeling.scorers import TokenScorer
from adaret.training.batching import Encoded


@torch.no_grad()
def pooled_features(model: RetentionModel, data: Encoded, batch_size: int, *, mode: str = "full",
                    schedule: KeepSchedule | None = None, scorer: TokenScorer | None = None,
                    desc: str | None = None) -> torch.Tensor:
    """The pooled features the head reads, in dataset order."""
    model.eval()
    features = torch.zeros(len(data), model.head.in_features)
    batches = tqdm(data.batches(batch_size), total=data.num_batches(batch_size), desc=desc or f"{mode} features",
                   dynamic_ncols=True, leave=False)
    for batch in batches:
        features[batch.indices] = model(**batch.inputs, mode=mode, schedule=schedule, scorer=scorer).pooled
    return features


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None,
                      distill_weight: float) -> torch.Tensor:
    """Cross-entropy on labels plus ``distill_weight * KL(softmax(teacher) || softmax(logits))``."""
    loss = F.cross_entropy(logits, labels)
    if teacher is None or distill_weight == 0.0:
        return loss
    kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")
    return loss + distill_weight * kl


def fit_head(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor, *, epochs: int,
             teacher: torch.Tensor | None = None, distill_weight: float = 0.0) -> torch.nn.Linear:
    """Full-batch AdamW on the (convex) head objective, in place, starting from the head's current weights."""
    head.requires_grad_(True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-2)
    with torch.enable_grad():
        for _ in range(epochs):
            loss = distillation_loss(head(features), labels, teacher, distill_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    head.requires_grad_(False)
    return head


def refit_budgets(budget: float, spread: float, floor: float) -> list[float]:
    """The budgets the deployed head is fitted at: b - spread, b, b + spread (where reachable) and 1.0."""
    candidates = [budget - spread, budget, budget + spread, 1.0]
    return sorted({round(b, 4) for b in candidates if floor < b <= 1.0})


def refit_head_on_retained(model: RetentionModel, data: Encoded, schedule: KeepSchedule, budgets: list[float],
                           teacher: torch.Tensor, *, batch_size: int, epochs: int, distill_weight: float,
                           full_features: torch.Tensor | None = None) -> None:
    """Re-fit ``model.head`` on hard top-M features at each of ``budgets`` (the schedule rescaled to each)."""
    parts = []
    for budget in budgets:
        if budget >= 1.0 and full_features is not None:
            parts.append(full_features)
        else:
            parts.append(pooled_features(model, data, batch_size, mode="hard", schedule=schedule.rescaled(budget),
                                         desc=f"head re-fit features @{budget:g}"))
    copies = len(parts)
    labels = torch.tensor(data.labels).repeat(copies)
    fit_head(model.head, torch.cat(parts), labels, epochs=epochs, teacher=teacher.repeat(copies, 1),
             distill_weight=distill_weight)
