from fractions import Fraction

import pytest

from adaret.modeling.schedule import DENOMINATOR, KeepSchedule


def test_keep_counts_equal_exact_ceil_for_many_lengths():
    schedule = KeepSchedule.from_fractions([1.0, 0.5861, 0.2301, 0.2033, 0.0192, 0.0001])
    for n in range(1, 513):
        counts = schedule.keep_counts(n)
        expected = [-(-Fraction(k, DENOMINATOR) * n // 1) for k in schedule.numerators]
        assert counts == [int(e) for e in expected]
        assert min(counts) >= 1 and counts == sorted(counts, reverse=True)


def test_from_fractions_clamps_to_one_and_warns():
    with pytest.warns(UserWarning, match="clamped"):
        schedule = KeepSchedule.from_fractions([1.0, 0.3, 0.0])
    assert schedule.numerators[-1] == 1


def test_schedule_must_be_non_increasing():
    with pytest.raises(ValueError):
        KeepSchedule((10000, 3000, 4000))


@pytest.mark.parametrize("budget", [0.25, 0.3, 0.4, 0.5, 0.8])
def test_rescaled_hits_budget_and_keeps_shape(budget):
    base = KeepSchedule.from_fractions([1.0, 0.586, 0.230, 0.203, 0.192, 0.190])
    scaled = base.rescaled(budget)
    assert scaled.budget == pytest.approx(budget, abs=6 / DENOMINATOR)
    assert scaled.numerators[0] == DENOMINATOR
    assert list(scaled.numerators) == sorted(scaled.numerators, reverse=True)


def test_rescaled_to_one_is_the_plain_encoder_and_unreachable_budget_errors():
    base = KeepSchedule.from_fractions([1.0, 0.5, 0.2])
    assert base.rescaled(1.0).numerators == (DENOMINATOR,) * 3
    with pytest.raises(ValueError, match="not reachable"):
        base.rescaled(0.3)  # layer 1 is never gated: 1/3 is the floor
