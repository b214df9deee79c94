"""The one interleaved-timing helper: which calls are made, in what order, and which of them are timed.

A fake clock advances only inside the calls, so every recorded duration is known exactly.
"""

from __future__ import annotations

import pytest

from adaret.core import timing


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.log: list[str] = []

    def call(self, name: str, seconds: float):
        def run():
            self.log.append(name)
            self.now += seconds
        return run


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", lambda: fake.now)
    return fake


def test_turns_interleave_with_settle_calls_before_the_timed_ones(clock):
    calls = {"full": clock.call("full", 0.04), "retained": clock.call("retained", 0.02)}
    samples = timing.interleaved_seconds(calls, rounds=2, per_round=3, warmup=1, settle=2)
    turn = lambda name: [name] * (2 + 3)  # noqa: E731 - two settle calls, then three timed ones
    assert clock.log == ["full", "retained", *turn("full"), *turn("retained"), *turn("full"), *turn("retained")]
    assert samples == {"full": pytest.approx([0.04] * 6), "retained": pytest.approx([0.02] * 6)}


def test_the_default_settles_twice(clock):
    timing.interleaved_seconds({"a": clock.call("a", 0.01)}, rounds=1, warmup=0)
    assert clock.log == ["a"] * (timing.SETTLE_CALLS + 1) and timing.SETTLE_CALLS == 2


def test_long_calls_skip_their_settle_calls(clock):
    calls = {"long": clock.call("long", 2.0), "short": clock.call("short", 0.1)}
    timing.interleaved_seconds(calls, rounds=2, warmup=0, settle=1, settle_below_s=1.0)
    # Round 1: nothing timed yet, so both settle; round 2: only the short call does.
    assert clock.log == ["long", "long", "short", "short", "long", "short", "short"]


def test_on_call_follows_every_timed_call(clock):
    ticks = []
    timing.interleaved_seconds({"a": clock.call("a", 0.01)}, rounds=3, per_round=2, warmup=0, settle=0,
                               on_call=lambda: ticks.append(len(clock.log)))
    assert ticks == [1, 2, 3, 4, 5, 6]
