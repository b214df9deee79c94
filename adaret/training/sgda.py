"""Two-timescale stochastic gradient descent-ascent on the retention Lagrangian.

    primal (gates; optionally head and backbone):  theta  <- AdamW step on  task_loss + lambda * (C - b)
    dual:                                           lambda <- max(0, lambda + eta_dual * (C - b))

The number of steps depends on what the method needs, not on the size of the data: at least
``min_steps`` (the duals need a few hundred steps to settle, whatever one epoch is), one epoch more if
the data is larger. Every ``eval_every`` steps the loop measures, on a validation slice carved from the
training split, what deployment will run: the deterministic keep schedule, rescaled to the budget, under
the hard top-M rule. It keeps the gates of the best such evaluation whose relaxed budget is within
``BUDGET_TOLERANCE`` of the target, and reports whether the budget and the accuracy were still moving.

Under torchrun each step's global batch is split over the processes, their gradients averaged by DDP and their
budget estimates all-reduced before the dual step (``adaret.training.distributed``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from adaret.modeling import BudgetDuals, KeepSchedule, RetentionModel, RetentionOutput, expected_budget
from adaret.training import distributed
from adaret.training.batching import Encoded
from adaret.training.evaluate import evaluate_relaxed
from adaret.training.head import distillation_loss

BUDGET_TOLERANCE = 0.02  # |achieved - target| that counts as meeting the budget


@dataclass
class ValidationPoint:
    """One evaluation of the gates on the validation slice."""

    step: int
    relaxed_budget: float
    hard_accuracy: float  # of the deployed rule: accuracy (classification) or F1 / 100 (question answering)
    agreement: float  # hard top-M predictions that match the full model's
    # The multipliers when the gates were evaluated: those of the gates a checkpoint keeps are what --resume
    # continues from.
    dual_lambda: float | None = None
    dual_mu: float | None = None

    def within_budget(self, budget: float) -> bool:
        return abs(self.relaxed_budget - budget) <= BUDGET_TOLERANCE

    def key(self) -> tuple[float, float, int]:
        return (self.hard_accuracy, self.agreement, self.step)

    def selection_key(self, budget: float) -> tuple[bool, float, float, float, int]:
        """How gate selection ranks evaluations: any within the budget above any outside it; outside, the nearer
        to the budget first (the final gates of a run that overshot can be the worst it had;
        benchmarks/results/qa_training_gpu.json); then the hard accuracy, the agreement and the later step."""
        inside = self.within_budget(budget)
        return (inside, 0.0 if inside else -abs(self.relaxed_budget - budget), *self.key())

    def ranks_above(self, other: ValidationPoint | None, budget: float) -> bool:
        """Whether these gates are kept over ``other``'s (``selection_key``)."""
        return other is None or self.selection_key(budget) >= other.selection_key(budget)


def _budget_advice(final: ValidationPoint, budget: float) -> str:
    """What may settle gates that ended outside the budget. Below it with the budget's multiplier still positive,
    the multiplier overshot (it grew while the gates lagged above the budget): a slower dual helps. Below it with
    the multiplier at 0, or above it, the duals have not caught up yet."""
    if final.relaxed_budget < budget and (final.dual_lambda or 0.0) > 0.0:
        return "lower --lr-dual"
    return "train longer: --min-steps" + (", or raise --lr-dual" if final.relaxed_budget > budget else "")


@dataclass
class SgdaResult:
    duals: BudgetDuals
    cost_ema: float
    steps: int
    best: ValidationPoint | None = None  # the evaluation whose gates were kept (``ValidationPoint.ranks_above``)
    history: list[ValidationPoint] = field(default_factory=list)  # every evaluation, in step order

    def convergence_notes(self, budget: float, validation_size: int) -> list[str]:
        """Why the run may not have converged; empty when the budget and the accuracy had both settled."""
        notes = []
        if self.history and not self.history[-1].within_budget(budget):
            final = self.history[-1]
            kept = (f"; the gates kept are from step {self.best.step}, at {self.best.relaxed_budget:.3f}"
                    if self.best else "")
            notes.append(f"budget still moving: at the last evaluation the gates spent {final.relaxed_budget:.3f} "
                         f"against {budget:g}{kept} ({_budget_advice(final, budget)})")
        if len(self.history) >= 3:
            last, earlier = self.history[-1].hard_accuracy, [c.hard_accuracy for c in self.history[-3:-1]]
            if last - sum(earlier) / 2 > max(0.01, 2.0 / max(validation_size, 1)):
                notes.append("accuracy still rising at the last evaluation (train longer: --min-steps)")
        if self.best is None:
            notes.append("no evaluation ran; the final gates were kept")
        elif not self.best.within_budget(budget):
            notes.append(f"no evaluation met the budget; the gates kept are those nearest to it (step "
                         f"{self.best.step}, at {self.best.relaxed_budget:.3f})")
        return notes


def total_steps(num_examples: int, batch_size: int, epochs: float, min_steps: int, max_steps: int | None) -> int:
    steps = max(min_steps, math.ceil(epochs * math.ceil(num_examples / batch_size)))
    return max(1, min(steps, max_steps) if max_steps else steps)


class SgdaTask(Protocol):
    """What gate training needs from a task: its loss on a relaxed forward, and the deployed rule's score."""

    def loss(self, out: RetentionOutput, batch: Any) -> torch.Tensor: ...

    def evaluate(self, model: RetentionModel, step: int) -> ValidationPoint: ...


class ClassificationTask:
    """Label cross-entropy plus distillation from the full model; hard top-M accuracy on the validation slice."""

    def __init__(self, config, teacher: torch.Tensor, validation: Encoded, validation_teacher: torch.Tensor):
        self.config, self.teacher = config, teacher
        self.validation, self.validation_teacher = validation, validation_teacher

    def loss(self, out: RetentionOutput, batch) -> torch.Tensor:
        return distillation_loss(out.logits, batch.labels, self.teacher[batch.indices], self.config.distill_weight)

    def evaluate(self, model: RetentionModel, step: int) -> ValidationPoint:
        return evaluate_gates(model, self.validation, self.validation_teacher, self.config, step)


def run_sgda(model: RetentionModel, train_set, config, task: SgdaTask, duals: BudgetDuals | None = None) -> SgdaResult:
    """Gate training; on return the model holds the gates of the best in-budget evaluation.

    ``train_set`` is any data set with ``len`` and ``batches(batch_size, shuffle=, seed=)``, whose batches are
    dataclasses of row-first tensors with ``inputs`` (the model's keyword inputs) and ``attention_mask``. ``duals``
    are the multipliers to start from (a resumed run); by default both start at 0. Under torchrun each step takes a
    global batch of ``batch_size`` rows per process (``adaret.training.distributed``).
    """
    optimizer = _optimizer(model, config)
    if duals is None:
        duals = BudgetDuals(config.budget, config.lr_dual, config.budget_slack, config.rho,
                            config.dual_restarts)
    global_batch = config.batch_size * distributed.world_size()
    total = total_steps(len(train_set), global_batch, config.epochs, config.min_steps, config.max_steps)
    result = SgdaResult(duals, float("nan"), total)
    best_state = None
    distributed.seed_per_rank(config.seed)
    bar = tqdm(total=total, desc="train (SGDA)", dynamic_ncols=True, disable=not distributed.is_main())
    step, epoch = 0, 0
    with distributed.data_parallel(model) as trained:
        while step < total:
            for batch in train_set.batches(global_batch, shuffle=True, seed=config.seed * 100_003 + epoch):
                cost = _primal_step(model, trained, optimizer, duals, batch, task, config)
                duals.step(cost)
                result.cost_ema = cost if step == 0 else 0.95 * result.cost_ema + 0.05 * cost
                step += 1
                if step % config.eval_every == 0 or step == total:
                    best_state = _evaluate(model, task, step, result, best_state, config)
                    bar.set_postfix(C=f"{result.history[-1].relaxed_budget:.3f}",
                                    hard_acc=f"{result.history[-1].hard_accuracy:.3f}",
                                    lam=f"{duals.upper.value:.3f}", refresh=False)
                bar.update()
                if step >= total:
                    break
            epoch += 1
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    return result


def _evaluate(model: RetentionModel, task: SgdaTask, step: int, result: SgdaResult, best_state: dict | None,
              config) -> dict | None:
    """One validation evaluation (on rank 0, so that every rank selects the same gates); the best gates so far."""
    duals = result.duals
    point = replace(distributed.from_main(functools.partial(task.evaluate, model, step)),
                    dual_lambda=duals.upper.value, dual_mu=duals.lower.value if duals.lower else None)
    result.history.append(point)
    if point.ranks_above(result.best, config.budget):
        result.best, best_state = point, _learning_state(model)
    return best_state


def _learning_state(model: RetentionModel) -> dict[str, torch.Tensor]:
    """A copy of every tensor gate training changes: the gates, and the head and backbone when they learn too
    (question answering, --tune-head, --fine-tune-backbone), so that the selected step is restored as a whole."""
    learning = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()
            if name in learning or name.startswith("gates.")}


def _primal_step(model: RetentionModel, trained: torch.nn.Module, optimizer, duals: BudgetDuals, batch,
                 task: SgdaTask, config) -> float:
    """One descent step on this rank's rows of ``batch``; returns C of the whole batch (the same on every rank).

    ``trained`` is ``model``, or its DDP wrapper under torchrun, which averages the gradients over the ranks.
    """
    model.train()
    if _backbone_frozen(model):
        model.encoder.eval()  # no dropout inside a frozen backbone
    rows, share = distributed.shard(batch)
    out = trained(**rows.inputs, mode="relaxed")
    task_loss = distributed.scaled(task.loss(out, rows), share)
    # All-reduced before the dual step, so that every rank moves lambda and mu by the same C.
    cost = distributed.global_mean(expected_budget(out.expected_masks, rows.attention_mask.float()), share)
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
    if not _backbone_frozen(model):
        groups.append({"params": list(model.encoder.parameters()), "lr": config.lr_backbone})
    return torch.optim.AdamW(groups, weight_decay=0.0)


def _backbone_frozen(model: RetentionModel) -> bool:
    """Whether the caller froze the backbone (``model.freeze_backbone()``). Read from the model, where the choice
    was applied, rather than from the config, which may leave it to the encoder's depth (``backbone_is_frozen``)."""
    return not any(parameter.requires_grad for parameter in model.encoder.parameters())
