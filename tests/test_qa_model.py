"""Question answering on the retention model: the span head, the forced question segment, drop-and-restore.

Tiny random BERT backbones; the reference for the hard top-M rule is drop-and-restore written out with explicit
masks (``RetentionModel._update_alive``), which is what relaxed mode computes when the gates are exactly 0 or 1.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert_config

from adaret.modeling import KeepSchedule, RetentionConfig, RetentionModel, encoder_from_config

QA = "question-answering"


def tiny_qa_model(seed: int = 0, **config_overrides) -> RetentionModel:
    torch.manual_seed(seed)
    model = RetentionModel(encoder_from_config(tiny_bert_config(), "eager"),
                           RetentionConfig(label_names=[], task=QA, **config_overrides))
    for gate in model.gates.values():  # spread the scores so that token choice is not a near-tie
        torch.nn.init.normal_(gate.scorer.weight, std=1.0)
    return model.eval()


def qa_batch(batch: int, seq: int, question: list[int], lengths: list[int], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30522, (batch, seq), generator=generator)
    mask = (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()
    types = ((torch.arange(seq)[None, :] >= torch.tensor(question)[:, None]) & (mask == 1)).long()
    return ids * mask, mask, types


def drop_and_restore(model: RetentionModel, ids, mask, types, kept: dict[int, torch.Tensor]) -> torch.Tensor:
    """Every layer updates only the tokens still kept; a dropped token keeps its last state at its position."""
    hidden, alive = model.encoder.embed(ids, types), mask.float()
    for layer in range(model.num_layers):
        if layer in kept:
            keep = torch.zeros_like(alive).scatter(1, kept[layer], 1.0)
            alive = alive * keep
        hidden = model._update_alive(layer, hidden, alive)
    return model.head(hidden)


@pytest.mark.parametrize("fractions", [(1.0, 0.7, 0.5, 0.3), (1.0, 0.9, 0.2, 0.2), (1.0, 0.5, 0.5, 0.5)])
def test_hard_rule_is_drop_and_restore(fractions):
    model = tiny_qa_model()
    ids, mask, types = qa_batch(3, 45, question=[6, 3, 11], lengths=[45, 30, 17])
    with torch.no_grad():
        hard = model(ids, mask, types, mode="hard", schedule=KeepSchedule.from_fractions(fractions))
        reference = drop_and_restore(model, ids, mask, types, hard.kept_positions)
    assert hard.logits.shape == (3, 45, 2)
    real = mask.bool()
    assert (hard.logits - reference)[real].abs().max() < 1e-5
    assert hard.kept_positions, "the schedule should prune some layers"


def test_the_question_segment_is_always_kept():
    model = tiny_qa_model(seed=3)
    question = [9, 4, 12]
    ids, mask, types = qa_batch(3, 60, question=question, lengths=[60, 41, 60], seed=1)
    with torch.no_grad():
        hard = model(ids, mask, types, mode="hard", schedule=KeepSchedule.from_fractions((1.0, 0.6, 0.4, 0.25)))
        relaxed = model(ids, mask, types, mode="relaxed")
    for kept in hard.kept_positions.values():
        for row, q in enumerate(question):
            assert set(range(q)) <= set(kept[row].tolist())
    for layer_mask in relaxed.masks:  # deterministic gates: a forced token's gate is exactly 1
        for row, q in enumerate(question):
            assert bool((layer_mask[row, :q] == 1).all())


def test_with_gate_question_only_cls_is_forced_and_the_rule_is_still_drop_and_restore():
    """``--gate-question``: the question's tokens compete with the context's for the same K_l."""
    model = tiny_qa_model(seed=3, gate_question=True)
    question = [9, 4, 12]
    ids, mask, types = qa_batch(3, 60, question=question, lengths=[60, 41, 60], seed=1)
    with torch.no_grad():
        hard = model(ids, mask, types, mode="hard", schedule=KeepSchedule.from_fractions((1.0, 0.6, 0.4, 0.25)))
        reference = drop_and_restore(model, ids, mask, types, hard.kept_positions)
    assert (hard.logits - reference)[mask.bool()].abs().max() < 1e-5
    last = hard.kept_positions[max(hard.kept_positions)]
    assert all(0 in row.tolist() for row in last)
    dropped = [set(range(q)) - set(last[row].tolist()) for row, q in enumerate(question)]
    assert any(dropped), "with random gates some question token should rank below K"


def test_full_budget_equals_the_full_model_at_real_positions():
    model = tiny_qa_model(seed=1)
    ids, mask, types = qa_batch(2, 33, question=[5, 7], lengths=[33, 20], seed=2)
    with torch.no_grad():
        full = model(ids, mask, types, mode="full").logits
        hard = model(ids, mask, types, mode="hard", schedule=KeepSchedule.from_fractions([1.0] * 4)).logits
    assert (full - hard)[mask.bool()].abs().max() < 1e-5


def test_question_answering_needs_token_types():
    model = tiny_qa_model()
    ids, mask, _ = qa_batch(1, 10, question=[3], lengths=[10])
    with pytest.raises(ValueError, match="token_type_ids"):
        model(ids, mask, None, mode="relaxed")


def test_a_kept_unpruned_prefix_gives_the_whole_forward_exactly_with_restore():
    """Question answering restores dropped states: the prefix must not change what is put back."""
    model = tiny_qa_model()
    ids, mask, types = qa_batch(3, 40, question=[5, 7, 9], lengths=[40, 31, 18])
    schedule = KeepSchedule.from_fractions([1, 0.5, 0.3, 0.2])
    with torch.no_grad():
        whole = model.forward_hard(ids, mask, types, schedule)
        reused = model.forward_hard(ids, mask, types, schedule, prefix=model.unpruned_prefix(ids, mask, types))
    assert torch.equal(whole.logits, reused.logits)
