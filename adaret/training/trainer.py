"""Training a retention model in two stages.

1. Head warm-up. The [CLS; mean] head is fitted on the *full* model's features (no retention), so the
   reference "same backbone and head without retention" is a properly trained classifier. Its logits on
   the training examples are kept as the teacher for stage 2.
2. Two-timescale stochastic gradient descent-ascent on the retention Lagrangian, whose task loss is the
   label cross-entropy plus ``distill_weight`` times KL(full model || retained model): the gates learn to
   keep what the full model's prediction depends on, not just enough to get the label right.

       primal (gates; optionally head and backbone):  theta  <- Adam step on  task_loss + lambda * (C - b)
       dual:                                           lambda <- max(0, lambda + eta_dual * (C - b))

   By default the head stays frozen in stage 2: retention is a drop-in for the encoder, and the task
   head is the one the full model uses (``tune_head`` lets it adapt to retained features too).
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from adaret.errors import AdaretError
from adaret.modeling import (
    BudgetDuals,
    KeepSchedule,
    RetentionConfig,
    RetentionModel,
    expected_budget,
    load_encoder,
)
from adaret.training.batching import Encoded
from adaret.training.checkpoint import (
    PACKAGED_MODEL,
    CheckpointInfo,
    RetentionCheckpoint,
    backbone_weights_sha256,
    library_versions,
    resolve_model_source,
)
from adaret.training.data import TextDataset, load_splits
from adaret.training.evaluate import accuracy, evaluate_relaxed


@dataclass
class TrainConfig:
    out: str
    model: str = PACKAGED_MODEL
    data: str = "bbc-news"
    budget: float = 0.4
    freeze_backbone: bool = True
    epochs: float = 1.0
    batch_size: int = 8
    max_length: int = 512
    lr_primal: float = 3e-3
    lr_backbone: float = 2e-5
    lr_dual: float = 0.2
    budget_slack: float | None = 0.01
    rho: float = 20.0
    seed: int = 0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    gate_first_layer: bool = False
    scorer: str = "linear"
    text_column: str = "text"
    label_column: str = "label"
    eval_every: int = 50
    tune_head: bool = False
    distill_weight: float = 1.0
    head_epochs: int = 300

    def validate(self) -> None:
        if not (isinstance(self.budget, float | int) and 0.0 < self.budget <= 1.0):
            raise AdaretError(f"budget must be a number in (0, 1], got {self.budget}")
        if self.epochs <= 0 or self.batch_size < 1:
            raise AdaretError("epochs must be > 0 and batch size >= 1")
        if self.max_length < 2:
            raise AdaretError(f"max length must be at least 2, got {self.max_length}")


def train(config: TrainConfig, command: str | None = None) -> RetentionCheckpoint:
    """Train gates (and the head) under the budget; evaluate; write the checkpoint atomically."""
    config.validate()
    torch.manual_seed(config.seed)
    started = time.perf_counter()
    model_dir = resolve_model_source(config.model)
    encoder = load_encoder(model_dir)
    max_positions = getattr(encoder.config, "max_position_embeddings", None)
    if max_positions is not None and config.max_length > max_positions:
        raise AdaretError(f"max length {config.max_length} exceeds the model's {max_positions} positions")
    splits = load_splits(config.data, seed=config.seed, text_column=config.text_column,
                         label_column=config.label_column)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    train_set = Encoded(_random_subset(splits.train, config.max_train_samples, config.seed), tokenizer,
                        config.max_length)
    eval_set = Encoded(_random_subset(splits.eval, config.max_eval_samples, config.seed), tokenizer,
                       config.max_length)

    retention = RetentionConfig(label_names=splits.train.label_names, gate_first_layer=config.gate_first_layer,
                                scorer=config.scorer, init_budget=config.budget)
    model = RetentionModel(encoder, retention)
    if config.freeze_backbone:
        model.freeze_backbone()
    teacher = warm_up_head(model, train_set, config)
    dual, train_cost = _run_sgda(model, train_set, eval_set, config, teacher)

    relaxed = evaluate_relaxed(model, eval_set, config.batch_size)
    measured = KeepSchedule.from_fractions(relaxed.keep_fractions)
    at_budget = measured.rescaled(config.budget)
    metrics = {
        "eval_examples": len(eval_set),
        "accuracy_full": accuracy(model, eval_set, mode="full", batch_size=config.batch_size),
        "accuracy_relaxed": relaxed.accuracy,
        "accuracy_hard": accuracy(model, eval_set, mode="hard", schedule=at_budget, batch_size=config.batch_size),
        "achieved_budget": relaxed.budget,
        "achieved_budget_train_ema": train_cost,
        "hard_schedule_budget": at_budget.budget,
        "final_lambda": dual.upper.value,
        "final_mu": dual.lower.value if dual.lower else None,
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    metrics["hard_over_full"] = metrics["accuracy_hard"] / max(metrics["accuracy_full"], 1e-12)
    info = CheckpointInfo(
        base_model={"source": config.model, "model_type": encoder.config.model_type,
                    "name": _model_name(config.model), "in_checkpoint": not config.freeze_backbone,
                    "weights_sha256": backbone_weights_sha256(model_dir),
                    "config": encoder.config.to_diff_dict() | {"model_type": encoder.config.model_type}},
        retention={},
        training=asdict(config) | {"command": command or " ".join(sys.argv)},
        schedule={"keep_fractions": relaxed.keep_fractions, "measured_on": eval_set_name(config),
                  "budget": relaxed.budget},
        metrics=metrics,
        versions=library_versions(),
    )
    checkpoint = RetentionCheckpoint(model, tokenizer, info)
    checkpoint.save_pretrained(config.out)
    return checkpoint


def _model_name(source: str) -> str:
    return "all-MiniLM-L6-v2" if source == PACKAGED_MODEL else Path(source).name


def eval_set_name(config: TrainConfig) -> str:
    return f"{config.data}:eval(seed={config.seed})"


def _random_subset(dataset: TextDataset, limit: int | None, seed: int) -> TextDataset:
    """A fixed random subset of ``limit`` examples (in their original order), or the whole dataset."""
    if limit is None or limit >= len(dataset):
        return dataset
    order = list(range(len(dataset)))
    random.Random(seed).shuffle(order)
    return dataset.subset(sorted(order[:limit]), f"first{limit}")


@torch.no_grad()
def _full_features(model: RetentionModel, data: Encoded, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled full-model features and labels, in dataset order."""
    model.eval()
    features = torch.zeros(len(data), model.head.in_features)
    for batch in tqdm(data.batches(batch_size), total=data.num_batches(batch_size), desc="full-model features",
                      dynamic_ncols=True):
        features[batch.indices] = model(**batch.inputs, mode="full").pooled
    return features, torch.tensor(data.labels)


def warm_up_head(model: RetentionModel, train_set: Encoded, config: TrainConfig) -> torch.Tensor:
    """Stage 1: fit the head on the full model's pooled features (full-batch AdamW; it is a linear layer).

    Returns the full model's logits on the training set, the teacher of stage 2.
    """
    features, labels = _full_features(model, train_set, config.batch_size)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=1e-2, weight_decay=1e-2)
    with torch.enable_grad():
        for _ in range(config.head_epochs):
            loss = F.cross_entropy(model.head(features), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return model.head(features)


def task_loss_with_teacher(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor | None,
                           distill_weight: float) -> torch.Tensor:
    """Cross-entropy on labels plus ``distill_weight * KL(softmax(teacher) || softmax(logits))``."""
    loss = F.cross_entropy(logits, labels)
    if teacher is None or distill_weight == 0.0:
        return loss
    kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")
    return loss + distill_weight * kl


def _optimizer(model: RetentionModel, config: TrainConfig) -> torch.optim.Optimizer:
    trainable = [*model.gates.parameters(), *(model.head.parameters() if config.tune_head else [])]
    if not config.tune_head:
        model.head.requires_grad_(False)
    groups = [{"params": trainable, "lr": config.lr_primal}]
    if not config.freeze_backbone:
        groups.append({"params": list(model.encoder.parameters()), "lr": config.lr_backbone})
    return torch.optim.AdamW(groups, weight_decay=0.0)


def _run_sgda(model: RetentionModel, train_set: Encoded, eval_set: Encoded, config: TrainConfig,
              teacher: torch.Tensor | None = None) -> tuple[BudgetDuals, float]:
    """Returns the duals and an exponential moving average of the training-time expected budget C."""
    optimizer = _optimizer(model, config)
    dual = BudgetDuals(config.budget, config.lr_dual, config.budget_slack, config.rho)
    steps_per_epoch = train_set.num_batches(config.batch_size)
    total = max(1, math.ceil(config.epochs * steps_per_epoch))
    probe = eval_set.take(32)  # a small fixed slice of the eval split for the progress bar
    bar = tqdm(total=total, desc="train (SGDA)", dynamic_ncols=True)
    step, eval_acc, cost_ema = 0, float("nan"), None
    while step < total:
        for batch in train_set.batches(config.batch_size, shuffle=True, seed=config.seed + step):
            model.train()
            if config.freeze_backbone:
                model.encoder.eval()  # no dropout inside a frozen backbone
            out = model(**batch.inputs, mode="relaxed")
            batch_teacher = teacher[batch.indices] if teacher is not None else None
            task_loss = task_loss_with_teacher(out.logits, batch.labels, batch_teacher, config.distill_weight)
            cost = expected_budget(out.expected_masks, batch.attention_mask.float())
            loss = task_loss + dual.penalty(cost)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            cost_value = float(cost.detach())
            dual.step(cost_value)
            cost_ema = cost_value if cost_ema is None else 0.95 * cost_ema + 0.05 * cost_value
            step += 1
            if step % config.eval_every == 0 or step == total:
                eval_acc = evaluate_relaxed(model, probe, config.batch_size, progress=False).accuracy
            bar.set_postfix(loss=f"{float(task_loss.detach()):.3f}", C=f"{cost_value:.3f}",
                            lam=f"{dual.upper.value:.3f}", mu=f"{dual.lower.value if dual.lower else 0.0:.3f}",
                            lr=config.lr_primal, lr_dual=config.lr_dual, eval_acc=f"{eval_acc:.3f}")
            bar.update()
            if step >= total:
                break
    bar.close()
    return dual, cost_ema
