"""Training a retention model in three stages.

1. Head warm-up. The [CLS; mean] head is fitted on the *full* model's features (no retention), so the
   reference "same backbone and head without retention" is a properly trained classifier. Its logits on
   the training examples are the teacher for stage 2.
2. Gate training: two-timescale stochastic gradient descent-ascent on the retention Lagrangian
   (``adaret.training.sgda``), whose task loss is the label cross-entropy plus ``distill_weight`` times
   KL(full model || retained model), with the head frozen. It keeps the gates whose hard top-M accuracy
   on a validation slice of the training split was best within the budget.
3. Head re-fit on the features of the deployed hard top-M rule (``adaret.training.head``), at the budget
   and around it, so the deployed head reads what the deployed graph computes.

The metrics report the reference (full model, warm-up head), the relaxed gates and the deployed rule on
the held-out split.
"""

from __future__ import annotations

import copy
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from adaret.core.errors import AdaretError
from adaret.core.outputs import output_dir
from adaret.modeling import KeepSchedule, RetentionConfig, RetentionModel, load_encoder
from adaret.modeling.hf_loading import load_tokenizer
from adaret.training.batching import Encoded
from adaret.training.checkpoint import (
    CheckpointInfo,
    RetentionCheckpoint,
    backbone_weights_sha256,
    library_versions,
    resolve_model_source,
)
from adaret.training.config import PACKAGED_MODEL, TrainConfig
from adaret.training.data import TextDataset, load_splits
from adaret.training.evaluate import RelaxedEval, accuracy, evaluate_relaxed
from adaret.training.head import fit_head, pooled_features, refit_budgets, refit_head_on_retained
from adaret.training.sgda import SgdaResult, run_sgda


@dataclass
class TrainingRun:
    """A finished run: the checkpoint written, and what baselines need to get the same head protocol."""

    checkpoint: RetentionCheckpoint
    train_set: Encoded
    teacher: torch.Tensor  # the full model's logits on ``train_set``


def train(config: TrainConfig, command: str | None = None) -> RetentionCheckpoint:
    """Train gates under the budget, re-fit the head on the deployed rule, evaluate, write the checkpoint."""
    return run_training(config, command).checkpoint


def run_training(config: TrainConfig, command: str | None = None) -> TrainingRun:
    config.validate()
    # Claimed before any work: a non-empty or busy --out fails now, not after training; a failed run leaves no
    # empty directory behind.
    with output_dir(config.out, overwrite=config.overwrite, what="checkpoint directory"):
        return _run_training(config, command)


def _run_training(config: TrainConfig, command: str | None) -> TrainingRun:
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    model_dir = resolve_model_source(config.model)
    # The data is read (and every row checked) before the model loads: a bad file fails in a second, not after it.
    splits = load_splits(config.data, seed=config.seed, text_column=config.text_column,
                         label_column=config.label_column)
    encoder = load_encoder(model_dir)
    if config.max_length > encoder.max_positions:
        raise AdaretError(f"max length {config.max_length} exceeds the model's {encoder.max_positions} positions")
    tokenizer = load_tokenizer(model_dir)
    train_part, validation_part = split_validation(_random_subset(splits.train, config.max_train_samples,
                                                                  config.seed), config)
    train_set = Encoded(train_part, tokenizer, config.max_length)
    validation = Encoded(validation_part, tokenizer, config.max_length)
    eval_set = Encoded(_random_subset(splits.eval, config.max_eval_samples, config.seed), tokenizer,
                       config.max_length)

    retention = RetentionConfig(label_names=splits.train.label_names, gate_first_layer=config.gate_first_layer,
                                scorer=config.scorer, init_budget=config.budget)
    model = RetentionModel(encoder, retention)
    if config.freeze_backbone:
        model.freeze_backbone()
    timer = StageTimer()
    with timer("head warm-up"):
        full_features = pooled_features(model, train_set, config.batch_size, desc="full-model features")
        teacher = warm_up_head(model, full_features, train_set, config)
        reference_head = copy.deepcopy(model.head)
        validation_teacher = model.head(pooled_features(model, validation, config.batch_size)).detach()
    with timer("gate training (SGDA)"):
        sgda = run_sgda(model, train_set, validation, config, teacher, validation_teacher)
    measured = KeepSchedule.from_fractions(evaluate_relaxed(model, validation, config.batch_size).keep_fractions)
    if config.refit_head:
        with timer("head re-fit"):
            refit_head_on_retained(model, train_set, measured,
                                   refit_budgets(config.budget, config.refit_spread, measured.min_budget), teacher,
                                   batch_size=config.batch_size, epochs=config.head_epochs,
                                   distill_weight=config.distill_weight, full_features=full_features)
    with timer("held-out evaluation"):
        relaxed = evaluate_relaxed(model, eval_set, config.batch_size)
        metrics = _held_out_metrics(model, reference_head, eval_set, relaxed, measured, config)
    metrics |= _training_metrics(sgda, config, len(validation), len(train_set), started)
    metrics["seconds_per_stage"] = timer.seconds
    info = CheckpointInfo(
        base_model={"source": config.model, "model_type": encoder.config.model_type,
                    "name": _model_name(config.model), "in_checkpoint": not config.freeze_backbone,
                    "weights_sha256": backbone_weights_sha256(model_dir),
                    "config": encoder.config.to_diff_dict() | {"model_type": encoder.config.model_type}},
        retention={},
        training={k: v for k, v in asdict(config).items() if k != "overwrite"}
        | {"command": command or " ".join(sys.argv)},
        schedule={"keep_fractions": measured.fractions, "measured_on": validation_set_name(config),
                  "budget": measured.budget},
        metrics=metrics,
        versions=library_versions(),
    )
    checkpoint = RetentionCheckpoint(model, tokenizer, info, reference_head=reference_head)
    checkpoint.save_pretrained(config.out, overwrite=config.overwrite)
    return TrainingRun(checkpoint, train_set, teacher)


def _held_out_metrics(model: RetentionModel, reference_head: torch.nn.Linear, eval_set: Encoded,
                      relaxed: RelaxedEval, measured: KeepSchedule, config: TrainConfig) -> dict:
    """Full (reference head), relaxed and hard top-M (deployed head) accuracy on the held-out split."""
    deployed_head, model.head = model.head, reference_head
    try:
        full = accuracy(model, eval_set, mode="full", batch_size=config.batch_size)
    finally:
        model.head = deployed_head
    at_budget = measured.rescaled(config.budget)
    hard = accuracy(model, eval_set, mode="hard", schedule=at_budget, batch_size=config.batch_size)
    return {
        "eval_examples": len(eval_set),
        "accuracy_full": full,
        "accuracy_relaxed": relaxed.accuracy,
        "accuracy_hard": hard,
        "hard_over_full": hard / max(full, 1e-12),
        "achieved_budget": relaxed.budget,
        "hard_schedule_budget": at_budget.budget,
    }


def _training_metrics(sgda: SgdaResult, config: TrainConfig, validation_size: int, train_size: int,
                      started: float) -> dict:
    return {
        "train_examples": train_size,
        "validation_examples": validation_size,
        "sgda_steps": sgda.steps,
        "achieved_budget_train_ema": sgda.cost_ema,
        "selected_step": sgda.best.step if sgda.best else None,
        "validation_history": [asdict(point) for point in sgda.history],
        "convergence_notes": sgda.convergence_notes(config.budget, validation_size),
        "head_refit": config.refit_head,
        "final_lambda": sgda.duals.upper.value,
        "final_mu": sgda.duals.lower.value if sgda.duals.lower else None,
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def _model_name(source: str) -> str:
    return "all-MiniLM-L6-v2" if source == PACKAGED_MODEL else Path(source).name


def validation_set_name(config: TrainConfig) -> str:
    return f"{config.data}:train-validation(seed={config.seed})"


class StageTimer:
    """Wall seconds per named stage, so training reports where its time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.perf_counter() - started, 1)


def _random_subset(dataset: TextDataset, limit: int | None, seed: int) -> TextDataset:
    """A fixed random subset of ``limit`` examples (in their original order), or the whole dataset."""
    if limit is None or limit >= len(dataset):
        return dataset
    order = list(range(len(dataset)))
    random.Random(seed).shuffle(order)
    return dataset.subset(sorted(order[:limit]), f"first{limit}")


def split_validation(dataset: TextDataset, config: TrainConfig) -> tuple[TextDataset, TextDataset]:
    """Carve the validation slice for checkpoint selection out of the training split (never the eval split)."""
    size = min(config.max_validation, max(1, round(config.validation_fraction * len(dataset))))
    if len(dataset) - size < 1:
        raise AdaretError(f"dataset {dataset.name} has too few training examples ({len(dataset)})")
    order = list(range(len(dataset)))
    random.Random(config.seed + 1).shuffle(order)
    return (dataset.subset(sorted(order[size:]), "fit"), dataset.subset(sorted(order[:size]), "validation"))


def warm_up_head(model: RetentionModel, full_features: torch.Tensor, train_set: Encoded,
                 config: TrainConfig) -> torch.Tensor:
    """Stage 1: fit the head on the full model's pooled features. Returns its logits, the teacher of stage 2."""
    fit_head(model.head, full_features, torch.tensor(train_set.labels), epochs=config.head_epochs)
    with torch.no_grad():
        return model.head(full_features)
