"""Hedged first tries: the class rule and the p95 window (pure, property-based)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.policies.hedge import MIN_SAMPLES, WINDOW, FirstByteWindow, hedges


def test_classes() -> None:
    assert not hedges("off", True) and not hedges("off", False)
    assert hedges("unary", False) and not hedges("unary", True)
    assert hedges("streams", True) and not hedges("streams", False)
    assert hedges("all", True) and hedges("all", False)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0.0, 100.0), min_size=0, max_size=600))
def test_p95_is_the_nearest_rank_of_the_last_window(samples: list[float]) -> None:
    w = FirstByteWindow()
    for s in samples:
        w.add(s)
    kept = samples[-WINDOW:]
    if len(kept) < MIN_SAMPLES:
        assert w.p95() is None
        return
    ordered = sorted(kept)
    p95 = w.p95()
    assert p95 == ordered[math.ceil(0.95 * len(ordered)) - 1]
    assert sum(1 for s in kept if s <= p95) >= 0.95 * len(kept)  # at most 5% wait longer


def test_bad_samples_are_ignored() -> None:
    w = FirstByteWindow()
    for s in (-1.0, math.nan, math.inf):
        w.add(s)
    assert len(w) == 0
