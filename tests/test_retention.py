import pytest
import torch

from adaret.modeling import DENOMINATOR, MIN_KEEP, KeepSchedule
from tests.conftest import make_tiny_model, random_batch


def test_cumulative_masks_are_monotone_across_layers(tiny_model):
    tiny_model.train()
    ids, mask = random_batch(4, 40, seed=3)
    out = tiny_model(ids, mask, mode="relaxed")
    for earlier, later in zip(out.masks, out.masks[1:], strict=False):
        assert bool((later <= earlier + 1e-7).all())
    for earlier, later in zip(out.expected_masks, out.expected_masks[1:], strict=False):
        assert bool((later <= earlier + 1e-7).all())


def test_cls_is_always_kept(tiny_model):
    ids, mask = random_batch(3, 50, seed=4)
    tiny_model.train()
    relaxed = tiny_model(ids, mask, mode="relaxed")
    assert all(bool((m[:, 0] == 1).all()) for m in relaxed.masks)
    hard = tiny_model(ids, mask, mode="hard", schedule=KeepSchedule.from_fractions([1, 0.1, 0.05, 0.02]))
    assert all(bool((pos[:, 0] == 0).all()) for pos in hard.kept_positions.values())


def test_hard_mode_drops_padding_before_real_tokens(tiny_model):
    ids, mask = random_batch(6, 64, seed=5)
    hard = tiny_model(ids, mask, mode="hard", schedule=KeepSchedule.from_fractions([1, 0.7, 0.4, 0.2]))
    lengths = mask.sum(1)
    for positions in hard.kept_positions.values():
        for row, kept in enumerate(positions):
            real_kept = int((kept < lengths[row]).sum())
            k = len(kept)
            # padding appears only once every real token that is still alive is kept
            assert real_kept == k or real_kept == min(k, int(lengths[row]))


def test_hard_mode_at_budget_one_equals_plain_encoder():
    model = make_tiny_model(seed=2)
    ids, mask = random_batch(4, 33, seed=6)
    with torch.no_grad():
        hard = model(ids, mask, mode="hard", schedule=KeepSchedule((DENOMINATOR,) * 4)).logits
        states = model.encoder.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = torch.cat([states[:, 0], (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)], -1)
        plain = model.head(pooled)
    torch.testing.assert_close(hard, plain, atol=1e-5, rtol=1e-5)


def test_relaxed_and_hard_agree_on_survivors_when_gates_saturate():
    model = make_tiny_model(seed=9)  # a model whose gates keep at least MIN_KEEP tokens at every layer
    for gate in model.gates.values():  # huge logits: every deterministic gate is exactly 0 or 1
        gate.scorer.weight.data *= 1e4
        gate.scorer.bias.data.zero_()
    n = 50  # DENOMINATOR / n is an integer, so a count maps to an exact numerator
    ids, mask = random_batch(1, n, seed=8, pad_rows=False)
    with torch.no_grad():
        relaxed = model(ids, mask, mode="relaxed")
        counts = [int(m.sum()) for m in relaxed.masks]
        assert MIN_KEEP <= counts[-1] < n  # the gates really dropped something, and the top-M floor is not hit
        schedule = KeepSchedule(tuple(c * DENOMINATOR // n for c in counts))
        hard = model(ids, mask, mode="hard", schedule=schedule)
    for layer, positions in hard.kept_positions.items():
        survivors = torch.nonzero(relaxed.masks[layer][0]).flatten()
        assert torch.equal(positions[0], survivors)
    torch.testing.assert_close(hard.logits, relaxed.logits, atol=1e-4, rtol=1e-4)


def test_relaxed_training_keeps_expected_budget_differentiable(tiny_model):
    tiny_model.train()
    tiny_model.freeze_backbone()
    ids, mask = random_batch(2, 20, seed=9)
    from adaret.modeling import expected_budget

    cost = expected_budget(tiny_model(ids, mask).expected_masks, mask.float())
    cost.backward()
    grads = [g.scorer.bias.grad for g in tiny_model.gates.values()]
    assert all(g is not None and float(g.abs()) > 0 for g in grads)
    assert all(p.grad is None for p in tiny_model.encoder.parameters())


@pytest.mark.parametrize("first", [False, True])
def test_gate_first_layer_option(first):
    model = make_tiny_model(gate_first_layer=first)
    assert ("0" in model.gates) is first and len(model.gates) == 4 - (not first)


def test_full_mode_matches_plain_encoder_on_ragged_real_batches(minilm_dir, tokenizer):
    """Padding slots of a ragged batch must be masked, not just down-weighted (real MiniLM, real text)."""
    from adaret.modeling import RetentionConfig, RetentionModel, load_encoder
    from adaret.training.data import load_splits

    texts = load_splits("bbc-news").eval.texts[:4]
    batch = tokenizer([texts[0][:200], texts[1], texts[2][:600], texts[3][:60]], padding=True, truncation=True,
                      max_length=256, return_tensors="pt")
    torch.manual_seed(0)
    model = RetentionModel(load_encoder(minilm_dir), RetentionConfig(label_names=["a", "b"])).eval()
    with torch.no_grad():
        full = model(batch["input_ids"], batch["attention_mask"], mode="full").logits
        states = model.encoder.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        mask = batch["attention_mask"][..., None]
        hidden = states.last_hidden_state
        plain = model.head(torch.cat([hidden[:, 0], (hidden * mask).sum(1) / mask.sum(1)], -1))
    torch.testing.assert_close(full, plain, atol=1e-4, rtol=1e-4)


UNGATED_FIRST_LAYER = [(1, 1, 1, 1), (1, 0.7, 0.4, 0.2), (1, 0.05, 0.05, 0.05)]


@pytest.mark.parametrize(("first", "fractions"), [(False, f) for f in UNGATED_FIRST_LAYER]
                         + [(True, f) for f in [*UNGATED_FIRST_LAYER, (0.5, 0.5, 0.3, 0.3)]])
def test_a_kept_unpruned_prefix_gives_the_whole_forward_exactly(first, fractions):
    """The budget search runs the layers before the first gate once per batch and reuses them at every budget."""
    model = make_tiny_model(gate_first_layer=first)
    schedule = KeepSchedule.from_fractions(list(fractions))
    with torch.no_grad():
        for batch, seq in ((1, 9), (3, 37), (4, 64)):
            ids, mask = random_batch(batch, seq, seed=seq)
            whole = model.forward_hard(ids, mask, None, schedule)
            prefix = model.unpruned_prefix(ids, mask)
            reused = model.forward_hard(ids, mask, None, schedule, prefix=prefix)
            assert model.first_gated_layer == (0 if first else 1)
            assert torch.equal(whole.logits, reused.logits)
            assert all(torch.equal(whole.kept_positions[k], reused.kept_positions[k]) for k in whole.kept_positions)


def test_a_prefix_is_refused_with_a_scorer_that_reads_attention():
    from adaret.modeling.scorers import make_scorer

    model = make_tiny_model()
    ids, mask = random_batch(2, 16)
    scorer = make_scorer("significance", model)
    with pytest.raises(ValueError, match="attention"):
        model.forward_hard(ids, mask, None, KeepSchedule.from_fractions([1, 0.5, 0.5, 0.5]), scorer=scorer,
                           prefix=model.unpruned_prefix(ids, mask))
