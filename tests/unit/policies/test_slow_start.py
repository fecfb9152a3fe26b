"""Slow start: the ramp factor from elapsed time (no clock inside)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.slow_start import SlowStart, ramping, slow_start_factor

POLICY = SlowStart(window_s=30.0)


def test_the_ramp_starts_at_the_floor_and_ends_at_one() -> None:
    assert slow_start_factor(0.0, POLICY) == 0.1
    assert slow_start_factor(15.0, POLICY) == pytest.approx(0.5)
    assert slow_start_factor(30.0, POLICY) == 1.0
    assert slow_start_factor(1e9, POLICY) == 1.0
    assert slow_start_factor(-5.0, POLICY) == 0.1  # a clock step back: not above the floor
    assert slow_start_factor(math.nan, POLICY) == 1.0  # never stuck low on a broken number
    assert slow_start_factor(0.0, SlowStart(0.0)) == 1.0  # off


def test_aggression_ramps_faster_at_first() -> None:
    fast = SlowStart(30.0, aggression=2.0)
    assert slow_start_factor(7.5, fast) == pytest.approx(0.5)


def test_ramping_lists_only_replicas_still_below_one() -> None:
    since = {"new": 95.0, "old": 10.0}
    assert ramping(since, 100.0, POLICY) == {"new": pytest.approx(5.0 / 30.0)}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_s": -1.0},
        {"window_s": 1.0, "min_factor": 0.0},
        {"window_s": 1.0, "aggression": 0.0},
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SlowStart(**kwargs)


@given(
    a=st.floats(-10, 100, allow_nan=False),
    b=st.floats(-10, 100, allow_nan=False),
    window=st.floats(0.0, 60.0, allow_nan=False),
    aggression=st.floats(0.1, 10.0),
)
def test_the_factor_never_falls_as_time_passes_and_stays_in_range(
    a: float, b: float, window: float, aggression: float
) -> None:
    policy = SlowStart(window, aggression=aggression)
    lo, hi = sorted((a, b))
    f_lo, f_hi = slow_start_factor(lo, policy), slow_start_factor(hi, policy)
    assert policy.min_factor <= f_lo <= f_hi <= 1.0
