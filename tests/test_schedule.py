from fractions import Fraction

import pytest

from adaret.modeling.schedule import DENOMINATOR, MIN_KEEP, KeepSchedule


def _expected_counts(schedule: KeepSchedule, n: int) -> list[int]:
    """max(2, ceil(f_l * n)) by exact rational arithmetic for a gated layer, n for a full one (and 1 at n = 1)."""
    return [n if k == DENOMINATOR else max(min(MIN_KEEP, n), int(-(-Fraction(k, DENOMINATOR) * n // 1)))
            for k in schedule.numerators]


def test_keep_counts_equal_floored_exact_ceil_for_many_lengths():
    schedule = KeepSchedule.from_fractions([1.0, 0.5861, 0.2301, 0.2033, 0.0192, 0.0001])
    for n in range(1, 513):
        counts = schedule.keep_counts(n)
        assert counts == _expected_counts(schedule, n), n
        assert all(isinstance(k, int) for k in counts)
        assert min(counts) >= min(MIN_KEEP, n) and counts == sorted(counts, reverse=True) and max(counts) <= n


def test_keep_counts_floor_is_two_where_plain_ceil_would_keep_one_token():
    schedule = KeepSchedule((DENOMINATOR, 6361, 1))
    assert schedule.keep_counts(2) == [2, 2, 2]
    assert schedule.keep_counts(3) == [3, 2, 2]
    assert schedule.keep_counts(1) == [1, 1, 1]  # a single position keeps itself
    assert schedule.keep_counts(512)[1:] == [(6361 * 512 + DENOMINATOR - 1) // DENOMINATOR, MIN_KEEP]


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
