"""Interleaved timing: the one way adaret times several graphs (or backends) against each other.

Side-by-side ratios are only honest when drift on a shared machine hits every entry alike, so entries take turns,
round after round. Each turn starts with ``settle`` untimed calls, because the first calls after a switch pay for
the previous entry: ONNX Runtime's intra-op workers of the other session keep spinning for a while after their
run, and on a 2-core machine that steals the next session's core. On a 2-core Intel Xeon (batch 1, the
question-answering graph at budget 0.4, right after a call of the full graph) the calls after a switch took 33.5,
33.3, then 19.1, 18.9, 18.5 ms (``python benchmarks/qa_speed.py``, results/qa_speed.md): the third call is the
first steady one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)

SETTLE_CALLS = 2
# A call this long hides another session's spinning workers (they stop within milliseconds): no settle calls.
SETTLE_BELOW_S = 1.0


def interleaved_seconds(calls: Mapping[Key, Callable[[], object]], rounds: int, *, per_round: int = 1,
                        warmup: int = 1, settle: int = SETTLE_CALLS, settle_below_s: float | None = None,
                        on_call: Callable[[], object] | None = None) -> dict[Key, list[float]]:
    """Seconds of each timed call of every entry, over ``rounds`` interleaved rounds.

    ``warmup`` untimed calls of every entry come first (first-run allocations, kernel selection). Each turn then
    makes ``settle`` untimed calls and ``per_round`` timed ones. With ``settle_below_s``, an entry whose last timed
    call took longer than that skips its settle calls: a call of seconds does not notice the milliseconds another
    session's workers spin. ``on_call`` runs after every timed call (a progress bar's update).
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples: dict[Key, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            last = samples[key][-1] if samples[key] else 0.0
            if settle_below_s is None or last < settle_below_s:
                for _ in range(settle):
                    call()
            for _ in range(per_round):
                started = time.perf_counter()
                call()
                samples[key].append(time.perf_counter() - started)
                if on_call is not None:
                    on_call()
    return samples
