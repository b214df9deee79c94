"""The per-layer keep schedule and the top-M rule.

Calibration measures keep fractions f_l per layer (non-increasing, because masks are cumulative).
Deployment rescales them to a budget b' and keeps, at layer l with n input positions,

    K_l = clamp(ceil(f_l * n), MIN_KEEP, K_{l-1})        (MIN_KEEP = 2: CLS and one content token)

The fractions are stored as integers per ``DENOMINATOR`` so that ceil is exact integer arithmetic,
``max(2, (num_l * n + DENOMINATOR - 1) // DENOMINATOR)``, in PyTorch and in an exported ONNX graph alike.
The schedule keeps num_l >= 1 and non-increasing, so the upper clamp is the identity for every n >= 2.

Why a floor of 2: with a plain ceil, torch.export derived bounds on the sequence length from facts about
K_l and aborted the dynamic export for many learned schedules. Two facts did it: "K_l != 1" (HF attention's
matmul decomposition branches on size-1 dimensions) and TopK's "K_l <= K_{l-1}", which the exporter could
not prove for two ceil expressions and solved into a bound n >= c that contradicts the axis's minimum of 2
(torch 2.13 then fails with an AssertionError while printing the violation). ``sym_max`` gives K_l a value
range that starts at 2, and both facts are decided without touching n; tests/test_export_property.py checks
many schedules. CLS is always kept, so the floor also guarantees one content token.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

DENOMINATOR = 10_000
MIN_KEEP = 2


@dataclass(frozen=True)
class KeepSchedule:
    """Per-layer keep numerators (out of DENOMINATOR), one per encoder layer; ungated layers hold DENOMINATOR."""

    numerators: tuple[int, ...]

    def __post_init__(self) -> None:
        nums = self.numerators
        if not nums or any(not 1 <= k <= DENOMINATOR for k in nums):
            raise ValueError(f"keep numerators must lie in [1, {DENOMINATOR}]: {nums}")
        if any(b > a for a, b in itertools.pairwise(nums)):
            raise ValueError(f"keep schedule must be non-increasing with depth: {nums}")

    @classmethod
    def from_fractions(cls, fractions: Sequence[float]) -> KeepSchedule:
        """Round fractions up to the integer grid, clamp to >= 1/DENOMINATOR and enforce monotonicity."""
        nums: list[int] = []
        clamped = []
        for layer, f in enumerate(fractions):
            k = math.ceil(round(f * DENOMINATOR, 6))
            if k < 1:
                clamped.append(layer + 1)
            k = min(max(k, 1), DENOMINATOR, nums[-1] if nums else DENOMINATOR)
            nums.append(k)
        if clamped:
            warnings.warn(f"keep fraction of layer(s) {clamped} rounds to 0; clamped to keep at least 1 token",
                          stacklevel=2)
        return cls(tuple(nums))

    @property
    def fractions(self) -> list[float]:
        return [k / DENOMINATOR for k in self.numerators]

    @property
    def budget(self) -> float:
        """The mean keep fraction over layers: the compute budget this schedule spends."""
        return sum(self.fractions) / len(self.numerators)

    def keep_counts(self, n):
        """K_l for ``n`` input positions; ``n`` may be an int or a symbolic size during export."""
        floor = min(MIN_KEEP, n) if isinstance(n, int) else MIN_KEEP  # an int n of 1 keeps its one token
        return [n if k == DENOMINATOR else torch.sym_max(floor, (k * n + DENOMINATOR - 1) // DENOMINATOR)
                for k in self.numerators]

    @property
    def full_layers(self) -> int:
        return sum(k == DENOMINATOR for k in self.numerators)

    @property
    def min_budget(self) -> float:
        """The budget of the always-full layers alone: ``rescaled`` reaches every budget above it, and 1.0."""
        return self.full_layers / len(self.numerators)

    def rescaled(self, budget: float) -> KeepSchedule:
        """This schedule's shape at another budget: f'_l = f_l ** p, with p found by bisection.

        A power keeps layers at 1.0 at 1.0, preserves the order of the layers (so the decay with depth),
        and sweeps the mean monotonically from 1 (p -> 0) to the number of always-full layers (p -> inf).
        """
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"budget must lie in (0, 1], got {budget}")
        base = self.fractions
        if budget >= 1.0:
            return KeepSchedule((DENOMINATOR,) * len(base))
        if budget <= self.min_budget:
            raise ValueError(f"budget {budget} is not reachable: {self.full_layers} of {len(base)} layers are "
                             f"never gated, so the smallest budget is above {self.min_budget:.3f}")

        def mean_at(power: float) -> float:
            return sum(f**power for f in base) / len(base)

        low, high = 1e-6, 1.0
        while mean_at(high) > budget:
            high *= 2.0
        for _ in range(100):
            mid = (low + high) / 2
            low, high = (mid, high) if mean_at(mid) > budget else (low, mid)
        return KeepSchedule.from_fractions([f**high for f in base])
