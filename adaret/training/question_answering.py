"""Training a retention model for extractive question answering (SQuAD v1.1 format).

Question answering needs the backbone fine-tuned, so the recipe has three stages, all on the same windows
(``adaret.core.qa_windows``: max length, doc stride and question cut as the runtime will use them):

1. Full fine-tuning: backbone and span head, no retention. This is the reference "the full model trained the
   same way"; its start and end logits on the training windows are the teacher of stage 2.
2. Gate training by SGDA (``adaret.training.sgda``), with the backbone and head still learning at the backbone's
   rate. The task loss is the span cross-entropy plus ``distill_weight`` times KL(teacher || retained) on the
   start and on the end distribution. Checkpoint selection scores the deployed hard top-M rule by F1 on a
   validation slice of the training questions.
3. Hard fine-tuning (``refit_epochs``; off with ``--no-refit-head``): backbone and head trained through the
   deployed hard top-M rule at the budget, gates fixed, with the same loss (``fine_tune_hard``).

The held-out metrics are SQuAD EM and F1 (the official v1.1 normalisation) of the stage-1 model, of the final
weights without retention, and of the deployed rule at the budget.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from adaret.core.errors import AdaretError
from adaret.core.qa_windows import QaWindows, best_spans, make_windows
from adaret.core.squad import (
    SquadExample,
    read_squad,
    split_by_context,
    squad_dev_path,
    squad_metrics,
    squad_train_path,
)
from adaret.modeling import KeepSchedule, RetentionModel, layer_keep_fractions
from adaret.training.batching import length_grouped
from adaret.training.sgda import BUDGET_TOLERANCE, ValidationPoint, run_sgda, total_steps

# Far below any real logit, so a padding position gets no probability; finite, so 0 * it stays 0 in the KL.
PADDING_LOGIT = -1e4


@dataclass(frozen=True)
class WindowSettings:
    """How contexts are cut into windows and answers read back; recorded in the checkpoint and the export."""

    max_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    max_answer_length: int = 30


@dataclass
class SpanBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    start_positions: torch.Tensor
    end_positions: torch.Tensor
    indices: torch.Tensor  # the windows' rows in their ``SpanData``; on the CPU, where teacher and outputs live

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                "token_type_ids": self.token_type_ids}


class SpanData:
    """SQuAD examples cut into windows once, batched many times (length-grouped, padded to each batch's longest)."""

    def __init__(self, examples: Sequence[SquadExample], tokenizer, settings: WindowSettings,
                 device: torch.device | str = "cpu"):
        self.examples = list(examples)
        self.settings = settings
        self.device = torch.device(device)  # where batches are made: the model's device
        self.windows: QaWindows = make_windows(
            tokenizer, [e.question for e in self.examples], [e.context for e in self.examples],
            max_length=settings.max_length, doc_stride=settings.doc_stride,
            max_query_length=settings.max_query_length, answers=[e.answers for e in self.examples])
        # Read once: ``QaWindows.lengths`` is computed over every window, and a batch reads it per row.
        self.lengths = self.windows.lengths

    def __len__(self) -> int:
        return len(self.windows)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> Iterator[SpanBatch]:
        for group in length_grouped(self.lengths, batch_size, shuffle=shuffle, seed=seed):
            yield self.collate(group)

    def collate(self, indices: list[int]) -> SpanBatch:
        width = max(self.lengths[i] for i in indices)
        arrays = {k: torch.from_numpy(v).to(self.device) for k, v in self.windows.pad(width, indices).items()}
        starts, ends = (torch.from_numpy(p[indices]).to(self.device)
                        for p in (self.windows.start_positions, self.windows.end_positions))
        return SpanBatch(arrays["input_ids"], arrays["attention_mask"], arrays["token_type_ids"], starts, ends,
                         torch.tensor(indices))


def span_logits(logits: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[batch, seq, 2] -> start and end logits [batch, seq], with padding positions ruled out."""
    masked = logits.masked_fill(attention_mask.unsqueeze(-1) == 0, PADDING_LOGIT)
    return masked[..., 0], masked[..., 1]


def span_loss(logits: torch.Tensor, batch: SpanBatch, teacher: torch.Tensor | None = None,
              distill_weight: float = 0.0) -> torch.Tensor:
    """(CE(start) + CE(end)) / 2, plus ``distill_weight`` times the mean KL(teacher || model) of both ends."""
    start, end = span_logits(logits, batch.attention_mask)
    loss = (F.cross_entropy(start, batch.start_positions) + F.cross_entropy(end, batch.end_positions)) / 2
    if teacher is None or distill_weight == 0.0:
        return loss
    teacher = teacher[:, : logits.shape[1]].to(logits.device)  # the teacher stays on the CPU, sliced per batch
    teacher_start, teacher_end = span_logits(teacher, batch.attention_mask)
    kl = sum(F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
             for s, t in ((start, teacher_start), (end, teacher_end)))
    return loss + distill_weight * kl / 2


# --- stage 1: the full model ---------------------------------------------------------------------------------


def fine_tune_full(model: RetentionModel, data: SpanData, config) -> int:
    """Fine-tune backbone and head without retention (AdamW, linear warm-up and decay); returns the steps."""
    steps = total_steps(len(data), config.batch_size, config.epochs, config.min_steps, config.max_steps)
    return _fine_tune(model, data, config, steps=steps, lr=config.lr_finetune, desc="fine-tune (full model)",
                      loss=lambda batch: span_loss(model(**batch.inputs, mode="full").logits, batch))


def fine_tune_hard(model: RetentionModel, data: SpanData, config, schedule: KeepSchedule,
                   teacher: torch.Tensor) -> int:
    """Stage 3: backbone and head fine-tuned through the deployed hard top-M rule at ``schedule`` (the gates stay
    fixed: top-M passes no gradient to them), with the span loss and the distillation from the full model, for
    ``refit_epochs`` epochs; returns the steps. Stage 2 trained the weights under the relaxed masks; the exported
    graph drops tokens outright, and a token dropped before layer l reaches the span head with its layer l-1
    state. This stage trains the head and backbone on exactly that, as LTP's final stage does."""
    steps = total_steps(len(data), config.batch_size, config.refit_epochs, 1, None)

    def loss(batch: SpanBatch) -> torch.Tensor:
        logits = model(**batch.inputs, mode="hard", schedule=schedule).logits
        return span_loss(logits, batch, teacher[batch.indices], config.distill_weight)

    return _fine_tune(model, data, config, steps=steps, lr=config.lr_backbone, desc="fine-tune (hard top-M)",
                      loss=loss)


def _fine_tune(model: RetentionModel, data: SpanData, config, *, steps: int, lr: float, desc: str,
               loss: Callable[[SpanBatch], torch.Tensor]) -> int:
    """AdamW on backbone and head for ``steps`` steps (linear warm-up over a tenth, then linear decay)."""
    parameters = [*model.encoder.parameters(), *model.head.parameters()]
    model.encoder.requires_grad_(True)
    model.head.requires_grad_(True)
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    bar = tqdm(total=steps, desc=desc, dynamic_ncols=True)
    model.train()
    step, epoch = 0, 0
    while step < steps:
        for batch in data.batches(config.batch_size, shuffle=True, seed=config.seed * 100_003 + epoch):
            value = loss(batch)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            bar.set_postfix(loss=f"{float(value.detach()):.3f}", refresh=False)
            bar.update()
            if step >= steps:
                break
        epoch += 1
    bar.close()
    model.eval()
    return steps


# --- evaluation ----------------------------------------------------------------------------------------------


@torch.no_grad()
def window_logits(model: RetentionModel, data: SpanData, batch_size: int, *, mode: str,
                  schedule: KeepSchedule | None = None, desc: str | None = None) -> torch.Tensor:
    """Every window's [max_length, 2] logits (padding positions at ``PADDING_LOGIT``), in window order."""
    model.eval()
    out = torch.full((len(data), data.settings.max_length, 2), PADDING_LOGIT)
    for batch in tqdm(data.batches(batch_size), total=data.num_batches(batch_size), desc=desc or f"eval {mode}",
                      leave=False, disable=desc is None):
        logits = model(**batch.inputs, mode=mode, schedule=schedule).logits
        start, end = span_logits(logits, batch.attention_mask)
        out[batch.indices, : logits.shape[1]] = torch.stack([start, end], dim=-1).cpu()
    return out


def predictions(data: SpanData, logits: torch.Tensor) -> dict[str, str]:
    """The best answer text per question id, decoded over all of its windows."""
    start, end = logits[..., 0].numpy(), logits[..., 1].numpy()
    spans = best_spans(start, end, data.windows, [e.context for e in data.examples],
                       max_answer_length=data.settings.max_answer_length)
    return {example.id: found[0].text for example, found in zip(data.examples, spans, strict=True)}  # never empty


def span_scores(model: RetentionModel, data: SpanData, batch_size: int, *, mode: str,
                schedule: KeepSchedule | None = None, desc: str | None = None) -> tuple[dict[str, float], dict]:
    """SQuAD EM and F1 (percent) of ``model`` in ``mode`` on ``data``, and its predictions."""
    predicted = predictions(data, window_logits(model, data, batch_size, mode=mode, schedule=schedule, desc=desc))
    return squad_metrics(predicted, data.examples), predicted


@torch.no_grad()
def relaxed_keep_fractions(model: RetentionModel, data: SpanData, batch_size: int) -> list[float]:
    """The deterministic gates' per-layer keep fractions f_l, weighted by window."""
    model.eval()
    total, count = None, 0
    for batch in data.batches(batch_size):
        out = model(**batch.inputs, mode="relaxed")
        fractions = layer_keep_fractions(out.expected_masks, batch.attention_mask.float()) * len(batch.indices)
        total = fractions if total is None else total + fractions
        count += len(batch.indices)
    return (total / count).tolist()


class QuestionAnsweringTask:
    """Span loss with distillation; F1 of the deployed hard top-M rule on the validation questions."""

    def __init__(self, config, teacher: torch.Tensor, validation: SpanData, validation_answers: dict[str, str]):
        self.config, self.teacher = config, teacher
        self.validation, self.validation_answers = validation, validation_answers  # the full model's answers

    def loss(self, out, batch: SpanBatch) -> torch.Tensor:
        return span_loss(out.logits, batch, self.teacher[batch.indices], self.config.distill_weight)

    def evaluate(self, model: RetentionModel, step: int) -> ValidationPoint:
        fractions = relaxed_keep_fractions(model, self.validation, self.config.batch_size)
        schedule = KeepSchedule.from_fractions(fractions).rescaled(self.config.budget)
        scores, predicted = span_scores(model, self.validation, self.config.batch_size, mode="hard",
                                        schedule=schedule)
        agree = sum(predicted[k] == v for k, v in self.validation_answers.items()) / len(self.validation_answers)
        return ValidationPoint(step, sum(fractions) / len(fractions), scores["f1"] / 100.0, agree)


# --- data ----------------------------------------------------------------------------------------------------


def load_qa_splits(data: str, seed: int) -> tuple[list[SquadExample], list[SquadExample], str]:
    """(train, held-out, name): ``squad`` is the official train/dev pair; a SQuAD-format file is split by context,
    a tenth of its contexts (and all their questions) held out."""
    if data == "squad":
        return read_squad(squad_train_path()), read_squad(squad_dev_path()), "squad-v1.1"
    if data.startswith("bbc") or data in ("rotten-tomatoes", "political-speeches"):
        raise AdaretError(f"--data {data} is a classification set; question answering reads squad or a SQuAD-format "
                          "JSON file")
    train, held_out = split_by_context(read_squad(data), seed)
    if not train:
        raise AdaretError(f"{data} has too few contexts to hold a tenth out ({len(held_out)} question(s) in all)")
    return train, held_out, data


def sample(examples: list[SquadExample], limit: int | None, seed: int) -> list[SquadExample]:
    """A fixed random subset of ``limit`` questions (in file order), or all of them."""
    if limit is None or limit >= len(examples):
        return examples
    chosen = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in chosen]


# --- the recipe ----------------------------------------------------------------------------------------------


@dataclass
class QaRun:
    model: RetentionModel
    schedule: KeepSchedule  # measured on the validation slice
    metrics: dict


def train_question_answering(model: RetentionModel, tokenizer, config, settings: WindowSettings) -> QaRun:
    """Both stages and the held-out evaluation, on a model with a span head (``RetentionConfig.task``)."""
    started, seconds = time.perf_counter(), {}
    train_examples, held_out, name = load_qa_splits(config.data, config.seed)
    train_examples = sample(train_examples, config.max_train_samples, config.seed)
    validation_size = min(config.max_validation, max(1, round(config.validation_fraction * len(train_examples))))
    device = next(model.parameters()).device
    validation = SpanData(train_examples[:validation_size], tokenizer, settings, device)
    train_set = SpanData(train_examples[validation_size:], tokenizer, settings, device)
    eval_set = SpanData(sample(held_out, config.max_eval_samples, config.seed), tokenizer, settings, device)

    clock = time.perf_counter()
    finetune_steps = fine_tune_full(model, train_set, config)
    full_scores, _ = span_scores(model, eval_set, config.batch_size, mode="full", desc="eval full (stage 1)")
    tqdm.write(f"full model after {finetune_steps} fine-tuning steps: F1 {full_scores['f1']:.2f}, "
               f"EM {full_scores['exact_match']:.2f} on {len(eval_set.examples)} held-out questions")
    teacher = window_logits(model, train_set, config.batch_size, mode="full", desc="teacher logits")
    _, validation_answers = span_scores(model, validation, config.batch_size, mode="full")
    seconds["fine-tune (full model)"] = round(time.perf_counter() - clock, 1)

    clock = time.perf_counter()
    # The backbone (never frozen here) keeps learning in gate training at its own rate, and so does the span head.
    gate_config = dataclasses.replace(config, tune_head=True)
    sgda = run_sgda(model, train_set, gate_config, QuestionAnsweringTask(config, teacher, validation,
                                                                          validation_answers))
    schedule = KeepSchedule.from_fractions(relaxed_keep_fractions(model, validation, config.batch_size))
    deployed = schedule.rescaled(config.budget)
    seconds["gate training (SGDA)"] = round(time.perf_counter() - clock, 1)

    hard_steps, before_refit = 0, None
    if config.refit_head and config.refit_epochs > 0:
        clock = time.perf_counter()
        before_refit, _ = span_scores(model, eval_set, config.batch_size, mode="hard", schedule=deployed,
                                      desc="eval hard top-M (before stage 3)")
        hard_steps = fine_tune_hard(model, train_set, config, deployed, teacher)
        seconds["fine-tune (hard top-M)"] = round(time.perf_counter() - clock, 1)

    clock = time.perf_counter()
    final_full, _ = span_scores(model, eval_set, config.batch_size, mode="full", desc="eval full (final weights)")
    hard, _ = span_scores(model, eval_set, config.batch_size, mode="hard", schedule=deployed, desc="eval hard top-M")
    achieved = sum(relaxed_keep_fractions(model, eval_set, config.batch_size)) / model.num_layers
    seconds["held-out evaluation"] = round(time.perf_counter() - clock, 1)
    metrics = {
        "data": name, "eval_questions": len(eval_set.examples), "eval_windows": len(eval_set),
        "train_questions": len(train_set.examples), "train_windows": len(train_set),
        "validation_questions": len(validation.examples),
        "f1_full": full_scores["f1"], "exact_match_full": full_scores["exact_match"],
        "f1_full_final_weights": final_full["f1"], "exact_match_full_final_weights": final_full["exact_match"],
        "f1_hard": hard["f1"], "exact_match_hard": hard["exact_match"],
        "hard_over_full": hard["f1"] / max(full_scores["f1"], 1e-12),
        "achieved_budget": achieved, "budget_within_tolerance": abs(achieved - config.budget) <= BUDGET_TOLERANCE,
        "f1_hard_before_stage3": None if before_refit is None else before_refit["f1"],
        "finetune_steps": finetune_steps, "sgda_steps": sgda.steps, "hard_finetune_steps": hard_steps,
        "selected_step": sgda.best.step if sgda.best else None,
        "validation_history": [vars(point) for point in sgda.history],
        "convergence_notes": sgda.convergence_notes(config.budget, len(validation.examples)),
        "final_lambda": sgda.duals.upper.value,
        "seconds_per_stage": seconds, "train_seconds": round(time.perf_counter() - started, 1),
    }
    return QaRun(model, schedule, metrics)
