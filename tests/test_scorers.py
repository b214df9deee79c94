"""Baseline token scorers (attention significance, random) and the tokenizer-side cuts the frontier compares."""

from __future__ import annotations

import math

import onnx
import pytest
import torch

from adaret.core.errors import AdaretError
from adaret.core.metadata import ExportMetadata
from adaret.export.pipeline import ExportConfig, run_export
from adaret.modeling import KeepSchedule
from adaret.modeling.scorers import AttentionSignificanceScorer, RandomScorer, make_scorer
from adaret.training.batching import Encoded
from tests.conftest import make_tiny_model, random_batch, save_tiny_checkpoint


def test_significance_is_the_attention_each_token_received_from_real_queries():
    """Against HF's own output_attentions: the first pruned layer sees layer 1's attention on all tokens."""
    model = make_tiny_model()
    ids, mask = random_batch(3, 19, seed=4)
    schedule = KeepSchedule.from_fractions([1.0, 0.5, 0.5, 0.5])
    captured = {}

    class Spy(AttentionSignificanceScorer):
        def forward(self, layer, hidden, positions, mask_, attention):
            scores = super().forward(layer, hidden, positions, mask_, attention)
            captured.setdefault(layer, scores)
            return scores

    with torch.no_grad():
        model.forward_hard(ids, mask, torch.zeros_like(ids), schedule, scorer=Spy())
        reference = model.encoder.backbone(input_ids=ids, attention_mask=mask, output_attentions=True)
    attention = reference.attentions[0]  # [batch, heads, queries, keys] of layer 1
    expected = (attention * mask[:, None, :, None]).sum(dim=(1, 2))
    real = mask.bool()
    torch.testing.assert_close(captured[1][real], expected[real], rtol=1e-5, atol=1e-5)


def test_significance_keeps_the_most_attended_tokens():
    model = make_tiny_model()
    ids, mask = random_batch(2, 24, seed=1, pad_rows=False)
    schedule = KeepSchedule.from_fractions([1.0, 0.25, 0.25, 0.25])
    with torch.no_grad():
        kept = model.forward_hard(ids, mask, None, schedule, scorer=make_scorer("significance", model)).kept_positions
        received = model.encoder.backbone(input_ids=ids, attention_mask=mask,
                                          output_attentions=True).attentions[0].sum(dim=(1, 2))
    received[:, 0] = math.inf  # CLS is always kept
    top = received.topk(schedule.keep_counts(24)[1], dim=1).indices.sort(dim=1).values
    assert torch.equal(kept[1], top)


def test_random_scorer_is_a_fixed_seeded_table():
    a, b, c = RandomScorer(4, 64, seed=0), RandomScorer(4, 64, seed=0), RandomScorer(4, 64, seed=1)
    positions = torch.tensor([[0, 5, 9, 63]])
    assert torch.equal(a(2, None, positions, None, None), b(2, None, positions, None, None))
    assert not torch.equal(a(2, None, positions, None, None), c(2, None, positions, None, None))
    assert not torch.equal(a(1, None, positions, None, None), a(2, None, positions, None, None))


def test_significance_refuses_a_gated_first_layer():
    with pytest.raises(ValueError, match="first layer"):
        make_scorer("significance", make_tiny_model(gate_first_layer=True))
    with pytest.raises(ValueError, match="unknown scorer"):
        make_scorer("oracle", make_tiny_model())


@pytest.mark.parametrize("scorer", ["significance", "random"])
def test_baseline_scorers_export_with_parity(tmp_path, tiny_checkpoint, scorer):
    result = run_export(ExportConfig(budget=0.4, checkpoint=str(tiny_checkpoint), out=str(tmp_path / "out"),
                                     scorer=scorer, with_positions=True, parity_batches=(1, 3),
                                     parity_lengths=(9, 37, 128)))
    parity = result.graphs[0].parity
    assert parity.passed and parity.positions_identical and len(parity.cases) >= 6
    assert ExportMetadata.from_model(onnx.load(str(tmp_path / "out" / "model.onnx"))).scorer == scorer


def test_export_refuses_significance_on_a_gated_first_layer(tmp_path, tokenizer):
    checkpoint = save_tiny_checkpoint(tmp_path / "ck", tokenizer, fractions=(0.8, 0.6, 0.35, 0.2),
                                      gate_first_layer=True)
    with pytest.raises(AdaretError, match=r"--scorer significance: .*first layer"):
        run_export(ExportConfig(budget=0.4, checkpoint=str(checkpoint), out=str(tmp_path / "out"),
                                scorer="significance"))


def _encoded(ids: list[list[int]]) -> Encoded:
    data = object.__new__(Encoded)
    data.ids, data.labels, data.pad_id = ids, [0] * len(ids), 0
    return data


@pytest.mark.parametrize("budget", [0.05, 0.3, 0.4, 0.77, 1.0])
def test_cuts_keep_ceil_b_n_tokens_from_the_head_or_both_ends(budget):
    texts = [[101, *range(1, n - 1), 102] for n in (2, 3, 10, 37, 128)]
    for keep_tail in (False, True):
        cut = _encoded(texts).truncated(budget, 102, keep_tail=keep_tail)
        for original, kept in zip(texts, cut.ids, strict=True):
            n = len(original)
            assert len(kept) == min(n, max(2, math.ceil(budget * n)))
            assert kept[0] == 101 and kept[-1] == 102
            content, body = kept[1:-1], original[1:-1]
            if len(kept) == n:
                assert kept == original
            elif not keep_tail:
                assert content == body[:len(content)]
            else:
                head = -(-len(content) // 2)
                assert content[:head] == body[:head]
                assert content[head:] == body[len(body) - (len(content) - head):]
