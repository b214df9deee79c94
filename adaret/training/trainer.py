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

Under torchrun (``adaret.training.distributed``) the ranks share the full model's features and gate training;
rank 0 alone fits the head (broadcast to the others), evaluates and writes the checkpoint. ``--resume`` starts
from a checkpoint's gates, warm-up head and multipliers (``metrics.gate_duals``) instead of a warm-up.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch

from adaret.core.errors import AdaretError
from adaret.core.io_spec import CLASSIFICATION, QUESTION_ANSWERING, SUMMARIZATION
from adaret.core.outputs import output_dir
from adaret.modeling import BudgetDuals, EncoderAdapter, KeepSchedule, RetentionConfig, RetentionModel, load_encoder
from adaret.modeling.hf_loading import load_tokenizer
from adaret.training import distributed
from adaret.training.batching import Encoded
from adaret.training.checkpoint import (
    CheckpointInfo,
    RetentionCheckpoint,
    backbone_weights_sha256,
    library_versions,
    resolve_model_source,
)
from adaret.training.config import (
    FROZEN_MAX_LAYERS,
    PACKAGED_MODEL,
    TrainConfig,
    backbone_is_frozen,
    gates_see_positions,
)
from adaret.training.data import TextDataset, load_splits
from adaret.training.evaluate import RelaxedEval, accuracy, evaluate_relaxed
from adaret.training.head import fit_head, pooled_features, refit_budgets, refit_head_on_retained
from adaret.training.question_answering import WindowSettings, train_question_answering
from adaret.training.sgda import BUDGET_TOLERANCE, ClassificationTask, SgdaResult, run_sgda


@dataclass
class TrainingRun:
    """A finished run: the checkpoint written, and what baselines need to get the same head protocol."""

    checkpoint: RetentionCheckpoint
    train_set: Encoded | None  # None for question answering, whose baselines are not built on it
    teacher: torch.Tensor | None  # the full model's logits on ``train_set``


def train(config: TrainConfig, command: str | None = None) -> RetentionCheckpoint:
    """Train gates under the budget, re-fit the head on the deployed rule, evaluate, write the checkpoint."""
    return run_training(config, command).checkpoint


def run_training(config: TrainConfig, command: str | None = None) -> TrainingRun:
    config.validate()
    # Claimed before any work: a non-empty or busy --out fails now, not after training; a failed run leaves no
    # empty directory behind. Under torchrun only rank 0 writes, so only it claims (the others stop if that fails).
    claim = partial(output_dir, config.out, overwrite=config.overwrite, what="checkpoint directory")
    with distributed.session(), distributed.on_main(claim):
        return _run_training(config, command)


def _run_training(config: TrainConfig, command: str | None) -> TrainingRun:
    torch.manual_seed(config.seed)
    if config.task == QUESTION_ANSWERING.task:
        with cuda_training_settings(config):
            return _run_question_answering(config, command)
    if config.task == SUMMARIZATION.task:
        with cuda_training_settings(config):
            return _run_summarization(config, command)
    started = time.perf_counter()
    model_dir = resolve_model_source(config.model)
    # The data is read (and every row checked) before the model loads: a bad file fails in a second, not after it.
    splits = load_splits(config.data, seed=config.seed, text_column=config.text_column,
                         label_column=config.label_column, eval_fold=config.eval_fold)
    encoder = load_encoder(model_dir)
    _check_max_length(config.max_length, encoder)
    chosen = config.freeze_backbone is None
    config = dataclasses.replace(config, freeze_backbone=backbone_is_frozen(config, encoder.num_layers))
    tokenizer = load_tokenizer(model_dir)
    train_part, validation_part = split_validation(_random_subset(splits.train, config.max_train_samples,
                                                                  config.seed), config)
    train_set = Encoded(train_part, tokenizer, config.max_length)
    validation = Encoded(validation_part, tokenizer, config.max_length)
    eval_set = Encoded(_random_subset(splits.eval, config.max_eval_samples, config.seed), tokenizer,
                       config.max_length)

    retention = _gates_as_configured(config, label_names=splits.train.label_names)
    model = RetentionModel(encoder, retention)
    if config.freeze_backbone:
        model.freeze_backbone()
    resumed = resume_from(config, model, model_dir, splits.train.label_names)
    timer = StageTimer()
    with timer("head warm-up"):
        full_features = full_model_features(model, train_set, config.batch_size)
        teacher = _warm_up(model, full_features, train_set, config, resumed)
        reference_head = copy.deepcopy(model.head)
        validation_teacher = model.head(pooled_features(model, validation, config.batch_size)).detach()
    with timer("gate training (SGDA)"):
        sgda = run_sgda(model, train_set, config, ClassificationTask(config, teacher, validation, validation_teacher),
                        duals=resumed_duals(config, resumed))
    measured = distributed.from_main(lambda: KeepSchedule.from_fractions(
        evaluate_relaxed(model, validation, config.batch_size).keep_fractions))
    if config.refit_head:
        with timer("head re-fit"):
            distributed.from_main(partial(
                refit_head_on_retained, model, train_set, measured,
                refit_budgets(config.budget, config.refit_spread, measured.min_budget), teacher,
                batch_size=config.batch_size, epochs=config.head_epochs, distill_weight=config.distill_weight,
                full_features=full_features))
            distributed.broadcast_module(model.head)
    with timer("held-out evaluation"):
        metrics = distributed.from_main(lambda: _held_out_metrics(
            model, reference_head, eval_set, evaluate_relaxed(model, eval_set, config.batch_size), measured, config))
    metrics |= _training_metrics(sgda, config, len(validation), len(train_set), started)
    metrics["data_notes"] = splits.train.class_notes() + _backbone_note(config, encoder, chosen)
    metrics["seconds_per_stage"] = timer.seconds
    info = CheckpointInfo(
        base_model=_base_model(config, encoder, model_dir, stored=not config.freeze_backbone), retention={},
        training=_recorded_training(config, command),
        schedule={"keep_fractions": measured.fractions, "measured_on": validation_set_name(config),
                  "budget": measured.budget},
        metrics=metrics,
        versions=library_versions(),
    )
    checkpoint = RetentionCheckpoint(model, tokenizer, info, reference_head=reference_head)
    # The other ranks wait here until rank 0 has written it; theirs stays unsaved (path None).
    distributed.from_main(partial(checkpoint.save_pretrained, config.out, overwrite=config.overwrite))
    return TrainingRun(checkpoint, train_set, teacher)


def _run_question_answering(config: TrainConfig, command: str | None) -> TrainingRun:
    """Extractive QA (``adaret.training.question_answering``); the fine-tuned backbone is stored in the checkpoint."""
    model_dir = resolve_model_source(config.model)
    encoder = load_encoder(model_dir)
    settings = WindowSettings(config.max_length, config.doc_stride, config.max_query_length, config.max_answer_length)
    _check_max_length(settings.max_length, encoder)
    if not encoder.uses_token_type_ids:
        raise AdaretError(f"question answering needs token types to find the question; {encoder.config.model_type} "
                          "has none (use a BERT-family encoder)")
    model = RetentionModel(encoder, _gates_as_configured(config, label_names=[], task=QUESTION_ANSWERING.task))
    tokenizer = load_tokenizer(model_dir)
    place_on_device(model, config)
    run = train_question_answering(model, tokenizer, config, settings)
    model.cpu()
    info = CheckpointInfo(
        base_model=_base_model(config, encoder, model_dir, stored=True), retention={},
        training=_recorded_training(config, command) | {"question_answering": asdict(settings)},
        schedule={"keep_fractions": run.schedule.fractions, "measured_on": f"{config.data}:train-validation",
                  "budget": run.schedule.budget},
        metrics=run.metrics,
        versions=library_versions(),
    )
    checkpoint = RetentionCheckpoint(model, tokenizer, info)
    distributed.from_main(partial(checkpoint.save_pretrained, config.out, overwrite=config.overwrite))
    return TrainingRun(checkpoint, None, None)


def _gates_as_configured(config: TrainConfig, **task_fields) -> RetentionConfig:
    """The gates the recipe asks for; ``task_fields``: the task's own settings (labels, task, memory)."""
    return RetentionConfig(gate_first_layer=config.gate_first_layer, scorer=config.scorer,
                           gate_positions=gates_see_positions(config), gate_question=config.gate_question,
                           init_budget=config.budget, **task_fields)


def _backbone_note(config: TrainConfig, encoder: EncoderAdapter, chosen: bool) -> list[str]:
    if not chosen or config.freeze_backbone:
        return []
    return [f"the backbone was fine-tuned, the default for an encoder of more than {FROZEN_MAX_LAYERS} layers "
            f"(this one has {encoder.num_layers}); --freeze-backbone keeps it frozen"]


def place_on_device(model: torch.nn.Module, config: TrainConfig) -> None:
    """Move ``model`` to ``--device``, refusing cuda where there is none."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise AdaretError("--device cuda: no CUDA device (torch.cuda.is_available() is False)")
    model.to(config.device)


@contextmanager
def cuda_training_settings(config: TrainConfig):
    """PyTorch's global settings for a run on ``--device cuda``, restored after it; nothing on the CPU.

    - float32 matrix products may use TF32 (PyTorch's "high" precision), the usual setting for training on Ampere
      and later; the run's own held-out numbers are then TF32 too (``adaret validate`` measures the exported
      graph in float32 on the CPU).
    - Summarization trains with the memory-efficient attention kernel off. Its backward failed in gate training
      ("LSE is not correctly aligned (strideH)", torch 2.11 on an H200), on the encoder's attention with the
      differentiable key bias log(m); the same run passed with the kernel off (attention then runs in PyTorch's
      math kernel; flash attention takes no float32). Question answering trained through that kernel on the same
      machine without error, so it keeps it.
    """
    if config.device != "cuda":
        yield
        return
    precision, efficient = torch.get_float32_matmul_precision(), torch.backends.cuda.mem_efficient_sdp_enabled()
    torch.set_float32_matmul_precision("high")
    if config.task == SUMMARIZATION.task:
        torch.backends.cuda.enable_mem_efficient_sdp(False)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cuda.enable_mem_efficient_sdp(efficient)


def _check_max_length(max_length: int, encoder: EncoderAdapter) -> None:
    if max_length > encoder.max_positions:
        raise AdaretError(f"max length {max_length} exceeds the model's {encoder.max_positions} positions; pass "
                          f"--max-length {encoder.max_positions} or less")


def _run_summarization(config: TrainConfig, command: str | None) -> TrainingRun:
    """Summarization (``adaret.training.summarization``): full model, gates by SGDA, decoder re-fit, ROUGE."""
    from adaret.core.summaries import load_summary_splits
    from adaret.modeling.seq2seq import RetentionSeq2Seq, warm_start_decoder
    from adaret.training import summarization as s2s
    from adaret.training.seq2seq_checkpoint import ChunkSettings, Seq2SeqCheckpoint, Seq2SeqInfo

    if distributed.is_distributed():
        raise AdaretError("summarization trains in one process (torchrun is not supported for it yet)")
    started = time.perf_counter()
    splits = load_summary_splits(config.data, seed=config.seed, text_column=config.text_column,
                                 summary_column=config.summary_column)
    model_dir = resolve_model_source(config.model)
    encoder = load_encoder(model_dir)
    if encoder.config.model_type != "bert":  # BertLMHeadModel would load another family's weights as random ones
        raise AdaretError(f"summarization warm-starts its decoder from a BERT checkpoint; {model_dir} is a "
                          f"{encoder.config.model_type} model (use a BERT-family encoder, like the default MiniLM)")
    _check_max_length(config.max_length, encoder)
    config = dataclasses.replace(config, freeze_backbone=backbone_is_frozen(config, encoder.num_layers))
    retention = _gates_as_configured(config, label_names=[], task=SUMMARIZATION.task, memory=config.memory)
    model = RetentionSeq2Seq(RetentionModel(encoder, retention), warm_start_decoder(str(model_dir)))
    if config.freeze_backbone:
        model.freeze_backbone()
    place_on_device(model, config)
    tokenizer = load_tokenizer(model_dir)
    settings = ChunkSettings(config.max_length, config.max_source_tokens, config.max_target_tokens)
    special = s2s.SpecialTokens.of(tokenizer)

    def data(pairs, limit):
        return s2s.SummaryData(s2s.random_subset(pairs, limit, config.seed), tokenizer, settings, special,
                               config.device)

    train_set = data(splits.train, config.max_train_samples)
    validation = data(splits.validation, config.max_validation)
    eval_set = data(splits.test, config.max_eval_samples)
    timer = StageTimer()
    backbone_lr = None if config.freeze_backbone else config.lr_backbone
    refit_epochs = config.refit_epochs if config.refit_head else 0.0
    with timer("full model (decoder)"):
        # the reference trains as long as the deployed decoder does in stages 1 and 3 together (see the module doc)
        start = s2s.train_decoder(model, train_set, epochs=config.decoder_epochs + refit_epochs, lr=config.lr_finetune,
                                  mode="full", batch_size=config.batch_size, seed=config.seed, encoder_lr=backbone_lr,
                                  snapshot_epochs=config.decoder_epochs if refit_epochs else None, desc="full model")
        reference = copy.deepcopy(model.decoder).requires_grad_(False)
        if start is not None:
            model.decoder = start.requires_grad_(True)
    with timer("gate training (SGDA)"):
        sgda = s2s.train_gates(model, train_set, validation, config)
    measured = KeepSchedule.from_fractions(s2s.relaxed_keep_fractions(model, validation, config.batch_size))
    deployed = measured.rescaled(config.budget)
    if config.refit_head:
        with timer("decoder re-fit"):
            s2s.train_decoder(model, train_set, epochs=config.refit_epochs, lr=config.lr_finetune, mode="hard",
                              schedule=deployed, batch_size=config.batch_size, seed=config.seed + 1,
                              desc="decoder re-fit")
    with timer("held-out evaluation"):
        metrics = _summarization_metrics(model, reference, eval_set, tokenizer, deployed, config)
    metrics |= _training_metrics(sgda, config, len(validation), len(train_set), started)
    metrics["seconds_per_stage"] = timer.seconds
    info = Seq2SeqInfo(
        encoder_config=encoder.config.to_diff_dict() | {"model_type": encoder.config.model_type},
        decoder_config=model.decoder.lm.config.to_diff_dict() | {"model_type": model.decoder.lm.config.model_type},
        retention={}, chunks=asdict(settings), special_tokens=asdict(special),
        schedule={"keep_fractions": measured.fractions, "measured_on": f"{config.data}:validation",
                  "budget": measured.budget},
        training=_recorded_training(config, command) | {"source_model": _model_name(config.model)},
        metrics=metrics, versions=library_versions())
    checkpoint = Seq2SeqCheckpoint(model.eval().cpu(), tokenizer, info, reference_decoder=reference.cpu())
    checkpoint.save_pretrained(config.out, overwrite=config.overwrite)
    return TrainingRun(checkpoint, None, None)


def _summarization_metrics(model, reference, eval_set, tokenizer, deployed: KeepSchedule,
                           config: TrainConfig) -> dict:
    """ROUGE of greedy summaries on the held-out split: the full model (reference decoder, full memory) and the
    deployed rule (re-fitted decoder, hard top-M memory at the budget)."""
    from adaret.training import summarization as s2s

    settings = {"batch_size": config.batch_size, "max_new_tokens": config.max_target_tokens - 1}
    deployed_decoder, model.decoder = model.decoder, reference
    try:
        full = s2s.rouge_of(model, eval_set, tokenizer, mode="full", schedule=None, desc="ROUGE full", **settings)
    finally:
        model.decoder = deployed_decoder
    hard = s2s.rouge_of(model, eval_set, tokenizer, mode="hard", schedule=deployed, desc="ROUGE hard", **settings)
    fractions = s2s.relaxed_keep_fractions(model, eval_set, config.batch_size)
    achieved = sum(fractions) / len(fractions)
    return {"eval_examples": len(eval_set), "rouge_full": full, "rouge_hard": hard,
            "achieved_budget": achieved, "budget_within_tolerance": abs(achieved - config.budget) <= BUDGET_TOLERANCE,
            "rougeL_hard_over_full": hard["rougeL"] / full["rougeL"] if full["rougeL"] > 0 else None,
            "deployed_schedule": deployed.fractions}


def _base_model(config: TrainConfig, encoder: EncoderAdapter, model_dir: Path, *, stored: bool) -> dict:
    """What a checkpoint records of its backbone; ``stored``: the (fine-tuned) backbone's weights are in it."""
    model_type = encoder.config.model_type
    return {"source": config.model, "model_type": model_type, "name": _model_name(config.model),
            "in_checkpoint": stored, "weights_sha256": backbone_weights_sha256(model_dir),
            "config": encoder.config.to_diff_dict() | {"model_type": model_type}}


def _recorded_training(config: TrainConfig, command: str | None) -> dict:
    """The recipe as run (``overwrite`` is not a recipe setting), with its command line."""
    return {k: v for k, v in asdict(config).items() if k != "overwrite"} | {"command": command or " ".join(sys.argv)}


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
        "gate_duals": gate_duals(sgda),
        "processes": distributed.world_size(),
        "train_seconds": round(time.perf_counter() - started, 1),
    }


def gate_duals(sgda: SgdaResult) -> dict:
    """The multipliers that go with the gates kept (the selected evaluation's, else the final ones): what
    ``--resume`` continues from."""
    if sgda.best is not None:
        return {"step": sgda.best.step, "lambda": sgda.best.dual_lambda, "mu": sgda.best.dual_mu}
    return {"step": sgda.steps, "lambda": sgda.duals.upper.value,
            "mu": sgda.duals.lower.value if sgda.duals.lower else None}


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


def full_model_features(model: RetentionModel, data: Encoded, batch_size: int) -> torch.Tensor:
    """The full model's pooled features of ``data``; under torchrun each rank computes its share of the rows."""
    rows = distributed.shard_rows(len(data))
    part = data if len(rows) == len(data) else _rows(data, rows)
    local = pooled_features(model, part, batch_size, desc="full-model features")
    return distributed.gather_rows(local, len(data))


def _rows(data: Encoded, rows: list[int]) -> Encoded:
    part = data.take(0)  # shares the padding id
    part.ids, part.labels = [data.ids[i] for i in rows], [data.labels[i] for i in rows]
    return part


def _warm_up(model: RetentionModel, full_features: torch.Tensor, train_set: Encoded, config: TrainConfig,
             resumed: RetentionCheckpoint | None) -> torch.Tensor:
    """Stage 1 on rank 0, its head broadcast; a resumed run keeps the checkpoint's head. Returns the teacher."""
    if resumed is not None:
        with torch.no_grad():
            return model.head(full_features)
    teacher = distributed.from_main(partial(warm_up_head, model, full_features, train_set, config))
    distributed.broadcast_module(model.head)
    return teacher


def resume_from(config: TrainConfig, model: RetentionModel, model_dir: Path,
                label_names: list[str]) -> RetentionCheckpoint | None:
    """``--resume``: the checkpoint's gates, backbone and warm-up head (the head gate training ran with) into
    ``model``. None without ``--resume``."""
    if config.resume is None:
        return None
    checkpoint = RetentionCheckpoint.from_pretrained(config.resume)
    problem = _resume_problem(checkpoint, config, label_names, backbone_weights_sha256(model_dir))
    if problem:
        raise AdaretError(f"cannot resume from {config.resume}: {problem}")
    model.load_state_dict(checkpoint.model.state_dict())
    if checkpoint.reference_head is not None:
        model.head.load_state_dict(checkpoint.reference_head.state_dict())
    return checkpoint


def _resume_problem(checkpoint: RetentionCheckpoint, config: TrainConfig, label_names: list[str],
                    backbone_sha256: str) -> str | None:
    retention, base = checkpoint.model.config, checkpoint.info.base_model
    if retention.task != CLASSIFICATION.task:
        return f"it is a {retention.task} checkpoint, and --resume continues classification training"
    if list(retention.label_names) != list(label_names):
        return f"its labels {retention.label_names} are not those of --data {config.data} ({label_names})"
    configured = {"scorer": config.scorer, "gate_first_layer": config.gate_first_layer,
                  "gate_positions": gates_see_positions(config)}
    for name, value in configured.items():
        if getattr(retention, name) != value:
            return f"its {name.replace('_', ' ')} is {getattr(retention, name)!r}, this run's {value!r}"
    if base.get("weights_sha256") != backbone_sha256:
        return f"it was trained on another backbone than --model {config.model}"
    if bool(base.get("in_checkpoint")) == config.freeze_backbone:
        flag = "--fine-tune-backbone" if base.get("in_checkpoint") else "the frozen backbone (no --fine-tune-backbone)"
        return f"resume it with {flag}, as it was trained"
    return None


def resumed_duals(config: TrainConfig, checkpoint: RetentionCheckpoint | None) -> BudgetDuals | None:
    """The multipliers of a resumed run: the checkpoint's ``gate_duals`` (``final_lambda``/``final_mu`` in
    checkpoints written before it was recorded). None without ``--resume``: gate training starts them at 0."""
    if checkpoint is None:
        return None
    metrics = checkpoint.info.metrics
    saved = metrics.get("gate_duals") or {"lambda": metrics.get("final_lambda"), "mu": metrics.get("final_mu")}
    duals = BudgetDuals(config.budget, config.lr_dual, config.budget_slack, config.rho,
                        config.dual_restarts)
    for dual, name in ((duals.upper, "lambda"), (duals.lower, "mu")):
        value = saved.get(name) if isinstance(saved, dict) else None
        if dual is not None and value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise AdaretError(f"cannot resume from {config.resume}: metrics.gate_duals.{name} must be a number "
                                  f">= 0, got {value!r}")
            dual.value = float(value)
    return duals


def warm_up_head(model: RetentionModel, full_features: torch.Tensor, train_set: Encoded,
                 config: TrainConfig) -> torch.Tensor:
    """Stage 1: fit the head on the full model's pooled features. Returns its logits, the teacher of stage 2."""
    fit_head(model.head, full_features, torch.tensor(train_set.labels), epochs=config.head_epochs)
    with torch.no_grad():
        return model.head(full_features)
