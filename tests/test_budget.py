import pytest
import torch

from adaret.modeling.budget import BudgetDuals, DualAscent, expected_budget, geometric_keep_ratio


def test_expected_budget_is_mean_layer_fraction_of_real_tokens():
    real = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    p = torch.tensor([[1.0, 0.5, 0.5, 0.0], [1.0, 0.2, 0.0, 0.0]])
    masks = [real, real * p, real * p * p]  # layer 1 ungated, then two gates
    # by hand: layer fractions per example: ex0 -> 1, 2/4, 1.5/4 ; ex1 -> 1, 1.2/2, 1.04/2
    per_layer = [1.0, (0.5 + 0.6) / 2, (0.375 + 0.52) / 2]
    assert float(expected_budget(masks, real)) == pytest.approx(sum(per_layer) / 3)


def test_dual_is_projected_nonnegative_and_ascends_on_violation():
    dual = DualAscent(0.4, lr=1.0)
    assert dual.step(0.5) == pytest.approx(0.1)
    assert dual.step(0.0) == 0.0  # projected, not negative
    assert dual.step(0.45) == pytest.approx(0.05)


def test_plain_lagrangian_gradient_is_lambda_and_augmented_reduces_to_it():
    cost = torch.tensor(0.5, requires_grad=True)
    plain = DualAscent(0.4, lr=1.0, initial=2.0)
    plain.penalty(cost).backward()
    assert float(cost.grad) == pytest.approx(2.0)
    cost.grad = None
    augmented = DualAscent(0.4, lr=1.0, rho=10.0, initial=2.0)
    augmented.penalty(cost).backward()
    assert float(cost.grad) == pytest.approx(2.0 + 10.0 * 0.1)  # max(0, lambda + rho * g)


def test_lower_bound_pushes_cost_up_when_slack():
    duals = BudgetDuals(0.4, lr=1.0, delta=0.02, rho=10.0)
    cost = torch.tensor(0.3, requires_grad=True)
    duals.penalty(cost).backward()
    assert float(cost.grad) < 0  # descending the penalty raises C
    duals.step(0.3)
    assert duals.lower.value == pytest.approx(0.08) and duals.upper.value == 0.0


@pytest.mark.parametrize("budget", [0.3, 0.4, 0.5, 0.9])
def test_geometric_ratio_solves_its_equation(budget):
    r = geometric_keep_ratio(budget, 6, 1)
    assert (1 + sum(r**k for k in range(1, 6))) / 6 == pytest.approx(budget, abs=1e-9)


def test_dual_restarts_zero_a_multiplier_once_its_constraint_holds():
    plain, restarted = DualAscent(0.4, lr=1.0), DualAscent(0.4, lr=1.0, restarts=True)
    for dual in (plain, restarted):
        dual.step(0.9)  # violated: both ascend alike
        assert dual.value == pytest.approx(0.5)
    plain.step(0.3)
    restarted.step(0.3)
    assert plain.value == pytest.approx(0.4)  # decays by lr * |g| only
    assert restarted.value == 0.0
    restarted.step(0.4)  # on the bound: the constraint holds
    assert restarted.value == 0.0


def test_budget_duals_pass_restarts_to_both_bounds():
    duals = BudgetDuals(0.4, lr=1.0, delta=0.05, restarts=True)
    duals.step(0.2)  # below the lower bound 0.35: mu ascends, lambda stays 0
    assert duals.lower.value == pytest.approx(0.15) and duals.upper.value == 0.0
    duals.step(0.38)  # inside [0.35, 0.4]: both constraints hold
    assert duals.lower.value == 0.0 and duals.upper.value == 0.0
    assert not BudgetDuals(0.4, lr=1.0, delta=0.05).lower.restarts
