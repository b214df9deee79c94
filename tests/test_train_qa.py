"""Question-answering training end to end on a tiny random BERT and a SQuAD-format file written here.

What is checked is the plumbing, not accuracy (a tiny random model learns little in a few steps): both stages run,
the budget machinery reports, the checkpoint records the task and its window settings, and it exports with parity
and answers through the torch-free runtime.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_squad

from adaret.core.errors import AdaretError
from adaret.export import ExportConfig, run_export
from adaret.training.checkpoint import RetentionCheckpoint
from adaret.training.config import TrainConfig
from adaret.training.question_answering import load_qa_splits
from adaret.training.trainer import train

CITIES = ["Paris", "Rome", "Madrid", "Berlin", "Vienna", "Lisbon", "Athens", "Dublin", "Oslo", "Prague"]
COUNTRIES = ["France", "Italy", "Spain", "Germany", "Austria", "Portugal", "Greece", "Ireland", "Norway", "Czechia"]


def squad_file(path: Path, contexts: int = 20) -> Path:
    paragraphs = []
    for i in range(contexts):
        city, country, year = CITIES[i % len(CITIES)], COUNTRIES[i % len(COUNTRIES)], str(1990 + i)
        context = (f"Report {i}. The weather was mild and the markets were calm. The capital of {country} is {city}, "
                   f"which hosted a meeting in {year}. Many visitors came that year.")
        paragraphs.append((context, [(f"q{i}-city", f"What is the capital of {country}?", city),
                                     (f"q{i}-year", f"When did {city} host a meeting?", year)]))
    return write_squad(path, paragraphs)


@pytest.fixture(scope="module")
def qa_checkpoint(tmp_path_factory, tiny_backbone) -> Path:
    directory = tmp_path_factory.mktemp("qa-train")
    data = squad_file(directory / "squad.json")
    config = TrainConfig(out=str(directory / "ck"), model=str(tiny_backbone), data=str(data),
                         task="question-answering", max_length=48, doc_stride=16, max_query_length=12,
                         min_steps=6, max_steps=6, eval_every=3, batch_size=4, budget=0.5)
    train(config)
    return directory / "ck"


def test_checkpoint_records_the_task_and_the_windows(qa_checkpoint):
    checkpoint = RetentionCheckpoint.from_pretrained(qa_checkpoint)
    assert checkpoint.model.config.task == "question-answering"
    assert checkpoint.info.training["question_answering"] == {
        "max_length": 48, "doc_stride": 16, "max_query_length": 12, "max_answer_length": 30}
    assert checkpoint.info.base_model["in_checkpoint"] is True  # the fine-tuned backbone is stored
    metrics = checkpoint.info.metrics
    for key in ("f1_full", "f1_hard", "exact_match_hard", "achieved_budget", "finetune_steps", "sgda_steps"):
        assert key in metrics
    assert 0.0 <= metrics["f1_hard"] <= 100.0
    assert metrics["sgda_steps"] == 6 and len(metrics["validation_history"]) == 2


def test_trained_checkpoint_exports_with_parity_and_answers(qa_checkpoint, tmp_path):
    from adaret import runtime

    result = run_export(ExportConfig(budget=0.5, checkpoint=str(qa_checkpoint), out=str(tmp_path / "ex"),
                                     parity_lengths=(9, 48)))
    assert all(g.parity.passed for g in result.graphs)
    session = runtime.load(tmp_path / "ex")
    answers = session.answer("What is the capital of Italy?",
                             "The capital of Italy is Rome, which hosted a meeting in 1991.")
    assert answers and answers[0].text  # a tiny random model: some span of the context, not the right one
    assert answers[0].text in "The capital of Italy is Rome, which hosted a meeting in 1991."


def test_a_squad_file_is_split_by_context(tmp_path):
    path = squad_file(tmp_path / "s.json", contexts=30)
    train_set, held_out, _ = load_qa_splits(str(path), seed=0)
    assert len(held_out) == 2 * 3 and len(train_set) == 2 * 27
    assert not {e.context for e in held_out} & {e.context for e in train_set}


def test_a_classification_set_is_refused_for_question_answering():
    with pytest.raises(AdaretError, match="classification set"):
        load_qa_splits("bbc-news", seed=0)


def test_stage_three_trains_backbone_and_head_through_hard_top_m_and_keeps_the_gates(qa_checkpoint, tmp_path):
    import torch

    from adaret.training.question_answering import SpanData, WindowSettings, fine_tune_hard, window_logits

    checkpoint = RetentionCheckpoint.from_pretrained(qa_checkpoint)
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    examples, _, _ = load_qa_splits(str(squad_file(tmp_path / "s.json")), seed=0)
    data = SpanData(examples, tokenizer, WindowSettings(48, 16, 12, 30))
    teacher = window_logits(model, data, 8, mode="full")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    config = TrainConfig(out=str(tmp_path / "unused"), batch_size=8, refit_epochs=1.0, lr_backbone=1e-3)
    schedule = checkpoint.info.keep_schedule.rescaled(0.5)
    steps = fine_tune_hard(model, data, config, schedule, teacher)
    assert steps == -(-len(data) // 8)  # one pass over the windows
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert any(name.startswith("encoder.") for name in changed) and any(name.startswith("head.") for name in changed)
    assert not any(name.startswith("gates.") for name in changed)  # top-M passes no gradient to the gates


def test_the_recipe_records_stage_three(qa_checkpoint):
    metrics = RetentionCheckpoint.from_pretrained(qa_checkpoint).info.metrics
    assert metrics["hard_finetune_steps"] > 0 and 0.0 <= metrics["f1_hard_before_stage3"] <= 100.0
