"""Two-timescale stochastic gradient descent-ascent on the retention Lagrangian.

    primal (gates; optionally head and backbone):  theta  <- AdamW step on  task_loss + lambda * (C - b)
    dual:                                           lambda <- max(0, lambda + eta_dual * (C - b))

The number of steps depends on what the method needs, not on the size of the data: at least
``min_steps`` (the duals need a few hundred steps to settle, whatever one epoch is), one epoch more if
the data is larger. Every ``eval_every`` steps the loop measures, on a validation slice carved from the
training split, what deployment will run: the deterministic keep schedule, rescaled to the budget, under
the hard top-M rule. It keeps the gates of the best such evaluation whose relaxed budget is within
``BUDGET_TOLERANCE`` of the target, and reports whether the budget and the accuracy were still moving.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from adaret.modeling import BudgetDuals, KeepSchedule, RetentionModel, expected_budget
from adaret.training.batching import Encoded
from adaret.training.evaluate import evaluate_relaxed
from adaret.training.head import distillation_loss

BUDGET_TOLERANCE = 0.02  # |achieved - target| that counts as meeting the budget


@dataclass
class ValidationPoint:
    """One evaluation of the gates on the validation slice."""

    step: int
    relaxed_budget: float
    hard_accuracy: float
    agreement: float  # hard top-M predictions that match the full model's

    def within_budget(self, budget: float) -> bool:
        return abs(self.relaxed_budget - budget) <= BUDGET_TOLERANCE

    def key(self) -> tuple[float, float, int]:
        return (self.hard_accuracy, self.agreement, self.step)


@dataclass
class SgdaResult:
    duals: BudgetDuals
    cost_ema: float
    steps: int
    history: list[ValidationPoint] = field(default_factory=list)
    best: ValidationPoint | None = None

    def convergence_notes(self, budget: float, validation_size: int) -> list[str]:
        """Why the run may not have converged; empty when the budget and the accuracy had both settled."""
        notes = []
        if self.history and not self.history[-1].within_budget(budget):
            kept = (f"; the gates kept are from step {self.best.step}, at {self.best.relaxed_budget:.3f}"
                    if self.best else "")
            notes.append(f"budget still moving: at the last evaluation the gates spent "
                         f"{self.history[-1].relaxed_budget:.3f} against {budget:g}{kept} (train longer: "
                         "--min-steps, or raise --lr-dual)")
        if len(self.history) >= 3:
            last, earlier = self.history[-1].hard_accuracy, [c.hard_accuracy for c in self.history[-3:-1]]
            if last - sum(earlier) / 2 > max(0.01, 2.0 / max(validation_size, 1)):
                notes.append("accuracy still rising at the last evaluation (train longer: --min-steps)")
        if self.best is None:
            notes.append("no evaluation met the budget; the final gates were kept")
        return notes


def total_steps(num_examples: int, batch_size: int, epochs: float, min_steps: int, max_steps: int | None) -> int:
    steps = max(min_steps, math.ceil(epochs * math.ceil(num_examples / batch_size)))
    return max(1, min(steps, max_steps) if max_steps else steps)


def run_sgda(model: RetentionModel, train_set: Encoded, validation: Encoded, config, teacher: torch.Tensor,
             validation_teacher: torch.Tensor) -> SgdaResult:
    """Gate training; on return the model holds the gates of the best in-budget evaluation."""
    optimizer = _optimizer(model, config)
    duals = BudgetDuals(config.budget, config.lr_dual, config.budget_slack, config.rho)
    total = total_steps(len(train_set), config.batch_size, config.epochs, config.min_steps, config.max_steps)
    result = SgdaResult(duals, float("nan"), total)
    best_state = None
    bar = tqdm(total=total, desc="train (SGDA)", dynamic_ncols=True)
    step, epoch = 0, 0
    while step < total:
        for batch in train_set.batches(config.batch_size, shuffle=True, seed=config.seed * 100_003 + epoch):
            cost = _primal_step(model, optimizer, duals, batch, teacher, config)
            duals.step(cost)
            result.cost_ema = cost if step == 0 else 0.95 * result.cost_ema + 0.05 * cost
            step += 1
            if step % config.eval_every == 0 or step == total:
                point = evaluate_gates(model, validation, validation_teacher, config, step)
                result.history.append(point)
                if point.within_budget(config.budget) and (result.best is None or point.key() >= result.best.key()):
                    result.best, best_state = point, copy.deepcopy(model.gates.state_dict())
                bar.set_postfix(C=f"{point.relaxed_budget:.3f}", hard_acc=f"{point.hard_accuracy:.3f}",
                                lam=f"{duals.upper.value:.3f}", refresh=False)
            bar.update()
            if step >= total:
                break
        epoch += 1
    bar.close()
    if best_state is not None:
        model.gates.load_state_dict(best_state)
    return result


def _primal_step(model: RetentionModel, optimizer, duals: BudgetDuals, batch, teacher: torch.Tensor, config) -> float:
    model.train()
    if config.freeze_backbone:
        model.encoder.eval()  # no dropout inside a frozen backbone
    out = model(**batch.inputs, mode="relaxed")
    task_loss = distillation_loss(out.logits, batch.labels, teacher[batch.indices], config.distill_weight)
    cost = expected_budget(out.expected_masks, batch.attention_mask.float())
    loss = task_loss + duals.penalty(cost)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(cost.detach())


@torch.no_grad()
def evaluate_gates(model: RetentionModel, data: Encoded, teacher: torch.Tensor, config, step: int) -> ValidationPoint:
    """Relaxed budget, and hard top-M accuracy at the budget, on ``data``."""
    relaxed = evaluate_relaxed(model, data, config.batch_size, progress=False)
    schedule = KeepSchedule.from_fractions(relaxed.keep_fractions).rescaled(config.budget)
    correct = agree = 0
    for batch in data.batches(config.batch_size):
        predicted = model(**batch.inputs, mode="hard", schedule=schedule).logits.argmax(-1)
        correct += int((predicted == batch.labels).sum())
        agree += int((predicted == teacher[batch.indices].argmax(-1)).sum())
    return ValidationPoint(step, relaxed.budget, correct / len(data), agree / len(data))


def _optimizer(model: RetentionModel, config) -> torch.optim.Optimizer:
    trainable = [*model.gates.parameters(), *(model.head.parameters() if config.tune_head else [])]
    model.head.requires_grad_(config.tune_head)
    groups = [{"params": trainable, "lr": config.lr_primal}]
    if not config.freeze_backbone:
        groups.append({"params": list(model.encoder.parameters()), "lr": config.lr_backbone})
    return torch.optim.AdamW(groups, weight_decay=0.0)
