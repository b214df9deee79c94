"""The global budget and its Lagrangian.

The budget is the expected fraction of real tokens each layer processes, averaged over all L layers:

    C = (1/L) * sum_l E[sum_i m[l, i]] / sum_i m[0, i],     E[m[l, i]] = m[0, i] * prod_{k <= l} P(z[k, i] != 0)

where the product runs over the gates before layers 1..l (an ungated layer multiplies by 1). The
constraint is C <= b, and training minimises the Lagrangian

    task_loss + lambda * (C - b)

by two-timescale stochastic gradient descent-ascent: model and gate parameters descend on their own
learning rate, and the dual variable ascends on its own and is projected back onto lambda >= 0:

    lambda <- max(0, lambda + eta_dual * (C - b))

Two refinements, both standard, and both off when their knob is 0 or None:

- Damping (``rho``). Adam moves the gate biases at a nearly constant rate whatever the size of lambda,
  so plain ascent makes C swing around b: lambda integrates the violation and nothing damps it. The
  augmented Lagrangian of an inequality g = C - b <= 0 adds the damping; its primal gradient is
  max(0, lambda + rho * g) * dC/dtheta, and at rho = 0 it is exactly the plain term lambda * g:

      (max(0, lambda + rho * g)^2 - lambda^2) / (2 * rho)

- Dual restarts (``restarts``, off by default). When a constraint holds, its optimal multiplier is 0
  (complementary slackness), yet plain ascent lets a lambda that grew while the gates lagged above the budget
  decay only at eta_dual * |C - b| per step, so the gates keep being pushed down long after C < b: an
  overshoot (Gallego-Posada et al., "Controlled Sparsity via Constrained Optimization", 2022, for L0 gates).
  A restart sets the multiplier to 0 at any step its constraint holds.

- A lower bound (``delta``). With drop-and-restore and a mean-pooling head, dropping a token costs the
  task little (its earlier state still reaches the pool), so C <= b alone goes slack and the gates learn
  their ranking far below the budget that deployment spends. A second constraint C >= b - delta, with
  its own multiplier mu >= 0 and the same update, keeps training at the deployed operating point.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def layer_keep_fractions(expected_masks: Sequence[torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """Per-layer expected keep fractions, averaged over the batch: [num_layers].

    ``expected_masks[l]`` is E[m[l, i]] for the tokens entering layer l ([batch, seq]); ``real`` is m[0].
    """
    n_real = real.sum(dim=1).clamp_min(1.0)
    return torch.stack([(e.sum(dim=1) / n_real).mean() for e in expected_masks])


def expected_budget(expected_masks: Sequence[torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """C = mean over layers of the expected keep fraction (closed form, differentiable)."""
    return layer_keep_fractions(expected_masks, real).mean()


class DualAscent:
    """The multiplier of one constraint ``sign * (C - bound) <= 0``, by projected ascent on its own timescale.

    ``sign=+1`` is the budget ``C <= b``; ``sign=-1`` is the lower bound ``C >= b - delta``.
    """

    def __init__(self, bound: float, lr: float, sign: int = 1, rho: float = 0.0, initial: float = 0.0,
                 restarts: bool = False):
        self.bound = bound
        self.lr = lr
        self.sign = sign
        self.rho = rho
        self.value = initial
        self.restarts = restarts

    def violation(self, cost):
        return self.sign * (cost - self.bound)

    def penalty(self, cost: torch.Tensor) -> torch.Tensor:
        g = self.violation(cost)
        if self.rho == 0.0:
            return self.value * g
        return ((self.value + self.rho * g).clamp_min(0.0) ** 2 - self.value**2) / (2.0 * self.rho)

    def step(self, cost: float) -> float:
        g = self.violation(cost)
        self.value = 0.0 if self.restarts and g <= 0 else max(0.0, self.value + self.lr * g)
        return self.value


class BudgetDuals:
    """The budget ``C <= b`` and, when ``delta`` is set, the lower bound ``C >= b - delta``."""

    def __init__(self, budget: float, lr: float, delta: float | None = None, rho: float = 0.0,
                 restarts: bool = False):
        self.upper = DualAscent(budget, lr, sign=1, rho=rho, restarts=restarts)
        self.lower = (DualAscent(budget - delta, lr, sign=-1, rho=rho, restarts=restarts)
                      if delta is not None else None)

    @property
    def duals(self) -> list[DualAscent]:
        return [self.upper] if self.lower is None else [self.upper, self.lower]

    def penalty(self, cost: torch.Tensor) -> torch.Tensor:
        return sum((d.penalty(cost) for d in self.duals), torch.zeros((), dtype=cost.dtype))

    def step(self, cost: float) -> None:
        for dual in self.duals:
            dual.step(cost)


def geometric_keep_ratio(budget: float, num_layers: int, num_ungated: int) -> float:
    """The per-gate open probability r with (num_ungated + r + r^2 + ... + r^g) / L = budget.

    Used to initialise the gate biases so training starts near the constraint.
    """
    gated = num_layers - num_ungated

    def mean_fraction(r: float) -> float:
        return (num_ungated + sum(r**k for k in range(1, gated + 1))) / num_layers

    low, high = 1e-6, 1.0 - 1e-6
    if mean_fraction(high) <= budget:
        return high
    if mean_fraction(low) >= budget:
        return low
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if mean_fraction(mid) < budget else (low, mid)
    return (low + high) / 2

