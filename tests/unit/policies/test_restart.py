"""Restart policy: exponential backoff with jitter, the crash-loop stop, and its reset rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.policies.restart import (
    RestartPolicy,
    RestartState,
    cleared,
    on_failure,
    on_served,
)

P = RestartPolicy(
    backoff_base_s=1.0,
    backoff_max_s=30.0,
    backoff_jitter=0.2,
    crash_loop_restarts=5,
    crash_loop_window_s=600.0,
)


def test_delays_double_up_to_the_cap_without_jitter() -> None:
    assert [P.delay(n, 0.0) for n in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_jitter_takes_off_at_most_its_fraction() -> None:
    assert P.delay(2, 0.0) == 4.0
    assert P.delay(2, 0.5) == pytest.approx(3.6)
    assert P.delay(2, 0.999999) == pytest.approx(3.2, abs=1e-5)


def test_five_restarts_in_the_window_then_a_crash_loop() -> None:
    state, now, delays = RestartState(), 0.0, []
    for _ in range(5):
        d = on_failure(P, state, now, 0.0)
        assert not d.crash_loop
        assert d.delay_s is not None
        delays.append(d.delay_s)
        state, now = d.state, now + d.delay_s + 1.0
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    d = on_failure(P, state, now, 0.0)
    assert d.crash_loop and d.state.crash_loop
    # A crash loop stays one until cleared.
    assert on_failure(P, d.state, now + 10_000.0, 0.0).crash_loop
    fresh = on_failure(P, cleared(), now, 0.0)
    assert fresh.delay_s == 1.0


def test_restarts_older_than_the_window_do_not_count() -> None:
    state = RestartState(failures=0, restarts=(0.0, 1.0, 2.0, 3.0, 4.0))
    assert on_failure(P, state, 100.0, 0.0).crash_loop
    later = on_failure(P, state, 602.5, 0.0)  # 0, 1 and 2 are out of the window
    assert not later.crash_loop
    assert later.state.restarts == (3.0, 4.0, 602.5)


def test_serving_resets_the_delay_but_not_the_window() -> None:
    d1 = on_failure(P, RestartState(), 0.0, 0.0)
    d2 = on_failure(P, d1.state, 10.0, 0.0)
    assert d2.delay_s == 2.0
    served = on_served(d2.state)
    assert served.failures == 0 and served.restarts == (0.0, 10.0)
    assert on_failure(P, served, 20.0, 0.0).delay_s == 1.0
    assert on_served(RestartState()) == RestartState()


def test_zero_or_absurd_settings_do_not_wait() -> None:
    assert RestartPolicy(backoff_base_s=0.0).delay(3, 0.5) == 0.0
    assert RestartPolicy(backoff_base_s=1e308, backoff_max_s=float("inf")).delay(9, 0.0) == 0.0


@settings(max_examples=300, deadline=None)
@given(
    base=st.floats(0.001, 100.0),
    cap=st.floats(0.001, 10_000.0),
    jitter=st.floats(0.0, 0.5),
    n=st.integers(0, 2000),
    r1=st.floats(0.0, 1.0, exclude_max=True),
    r2=st.floats(0.0, 1.0, exclude_max=True),
)
def test_delays_grow_below_the_cap_and_stay_within_bounds(
    base: float, cap: float, jitter: float, n: int, r1: float, r2: float
) -> None:
    p = RestartPolicy(backoff_base_s=base, backoff_max_s=cap, backoff_jitter=jitter)
    d, nxt = p.delay(n, r1), p.delay(n + 1, r2)
    ceiling = min(cap, base * 2.0 ** min(n, 1000))
    assert ceiling * (1.0 - jitter) - 1e-9 <= d <= ceiling + 1e-9
    if base * 2.0 ** min(n + 1, 1000) <= cap:
        assert nxt >= d - 1e-9


@settings(max_examples=200, deadline=None)
@given(
    restarts=st.integers(1, 8),
    window=st.floats(1.0, 1000.0),
    gaps=st.lists(st.floats(0.0, 2000.0), min_size=1, max_size=40),
)
def test_never_more_restarts_in_a_window_than_allowed(
    restarts: int, window: float, gaps: list[float]
) -> None:
    """Whatever the timing of failures, the decided restarts inside any window never exceed
    the limit, and once in a crash loop no restart is decided until cleared."""
    p = RestartPolicy(crash_loop_restarts=restarts, crash_loop_window_s=window)
    state, now, decided = RestartState(), 0.0, []
    for gap in gaps:
        now += gap
        d = on_failure(p, state, now, 0.5)
        if state.crash_loop:
            assert d.crash_loop
        if not d.crash_loop:
            decided.append(now)
        state = d.state
    for t in decided:
        assert sum(1 for u in decided if t <= u < t + window) <= restarts
