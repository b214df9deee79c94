import math

import pytest
import torch

from adaret.modeling.gates import FORCED_LOGIT, HardConcreteGate, HardConcreteParams, force_logits


@pytest.fixture
def gate() -> HardConcreteGate:
    torch.manual_seed(0)
    return HardConcreteGate(16, HardConcreteParams())


@pytest.mark.parametrize("log_alpha", [-4.0, -1.0, 0.0, 0.7, 3.0])
def test_closed_form_open_probability_matches_monte_carlo(gate, log_alpha):
    torch.manual_seed(1)
    samples = 200_000
    z = gate.sample(torch.full((samples,), log_alpha))
    estimate = float((z > 0).float().mean())
    closed = float(gate.prob_open(torch.tensor(log_alpha)))
    # independent check of the formula itself: sigmoid(log_alpha - beta * log(-gamma / zeta))
    p = HardConcreteParams()
    assert closed == pytest.approx(1 / (1 + math.exp(-(log_alpha - p.beta * math.log(-p.gamma / p.zeta)))))
    standard_error = math.sqrt(closed * (1 - closed) / samples)
    assert abs(estimate - closed) < 5 * standard_error + 1e-4


def test_gates_stay_in_unit_interval_and_hit_both_ends(gate):
    log_alpha = torch.linspace(-8, 8, 1000)
    z = gate.sample(log_alpha.repeat(50))
    assert float(z.min()) == 0.0 and float(z.max()) == 1.0
    det = gate.deterministic(log_alpha)
    assert bool(((det >= 0) & (det <= 1)).all())
    assert bool(((gate.prob_open(log_alpha) >= 0) & (gate.prob_open(log_alpha) <= 1)).all())


def test_gradients_flow_through_log_alpha(gate):
    hidden = torch.randn(2, 7, 16)
    log_alpha = gate.log_alpha(hidden)
    (gate.sample(log_alpha).sum() + gate.prob_open(log_alpha).sum()).backward()
    assert gate.scorer.weight.grad is not None and float(gate.scorer.weight.grad.abs().sum()) > 0
    assert float(gate.scorer.bias.grad.abs()) > 0


def test_force_logits_keeps_cls_and_ranks_padding_last():
    log_alpha = torch.tensor([[-50.0, 3.0, -20.0, 5.0, 9.0]])
    alive = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]])
    positions = torch.arange(5).unsqueeze(0)
    scores = force_logits(log_alpha, alive, positions)
    assert float(scores[0, 0]) == FORCED_LOGIT
    assert float(scores[0, 3:].max()) < float(scores[0, :3].min())
    assert float(scores[0, 3]) > float(scores[0, 4])  # padding ties broken by position, the same everywhere


def test_position_prior_adds_its_two_terms_to_the_content_score():
    torch.manual_seed(0)
    gate = HardConcreteGate(16, HardConcreteParams(), positions=True)
    with torch.no_grad():
        gate.position_weights.copy_(torch.tensor([-3.0, 5.0]))
    hidden, relative = torch.randn(2, 7, 16), torch.rand(2, 7)
    content = gate.scorer(gate.norm(hidden)).squeeze(-1)
    centred = relative - 0.5
    expected = content - 3.0 * centred + 5.0 * centred**2
    assert torch.allclose(gate.log_alpha(hidden, relative), expected, atol=1e-6)
    with pytest.raises(ValueError, match="relative position"):
        gate.log_alpha(hidden)
    gate.log_alpha(hidden, relative).sum().backward()
    assert float(gate.position_weights.grad.abs().min()) > 0  # both terms learn


def test_position_prior_starts_out_ranking_like_truncation():
    from adaret.modeling.gates import POSITION_INIT

    torch.manual_seed(0)
    gate = HardConcreteGate(384, HardConcreteParams(), positions=True)  # MiniLM's width, at initialisation
    relative = torch.linspace(0, 1, 200).unsqueeze(0)
    scores = gate.log_alpha(torch.randn(1, 200, 384), relative)
    kept = torch.topk(scores, 80, dim=1).indices
    # Mostly the head that a first-40% cut keeps: the content scores (std about 0.4 here) blur the boundary only.
    assert POSITION_INIT < 0 and int((kept < 80).sum()) >= 70 and int(kept.max()) < 120
