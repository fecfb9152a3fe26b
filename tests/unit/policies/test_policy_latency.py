"""TTFT/TPOT against the pool: a tolerance, a floor, and no jump at the edge."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.latency import (
    LatencyTolerance,
    PoolLatency,
    pool_latency,
    slow_factor,
    too_slow,
)
from hanode.pool.replica import HealthLevel, Observation


def test_rounding_noise_moves_nothing() -> None:
    """The old rule rounded to whole ms and then compared: 4 ms vs 3 ms lowered a weight."""
    assert slow_factor(4.0, 3.0, 0.1, 20.0) == 1.0
    assert slow_factor(3.6, 3.4, 0.1, 2.0) == 1.0
    assert not too_slow(4.0, 3.0, 0.1, 2.0)


def test_edge_is_continuous() -> None:
    assert slow_factor(110.0, 100.0, 0.1, 0.0) == 1.0
    assert slow_factor(110.0 + 1e-9, 100.0, 0.1, 0.0) == pytest.approx(1.0)


@pytest.mark.parametrize("value", [math.inf])
def test_infinite_value_against_a_pool(value: float) -> None:
    assert slow_factor(value, 100.0, 0.1, 20.0) == 0.0
    assert too_slow(value, 100.0, 0.1, 20.0)


def test_pool_medians_skip_unknown_and_infinite() -> None:
    def o(ttft: float | None, tpot: float | None) -> Observation:
        return Observation(level=HealthLevel.HEALTHY, ttft_ms=ttft, tpot_ms=tpot)

    pool = pool_latency([o(100.0, 5.0), o(300.0, math.inf), o(None, 7.0), o(math.nan, None)])
    assert pool == PoolLatency(200.0, 6.0)
    assert pool_latency([]) == PoolLatency(None, None)


@pytest.mark.parametrize(
    "kw", [{"latency_tolerance": -0.1}, {"ttft_floor_ms": math.inf}, {"tpot_floor_ms": math.nan}]
)
def test_tolerance_is_validated(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LatencyTolerance(**kw)


finite = st.floats(min_value=0.0, max_value=1e7)


@given(finite, finite, finite, st.floats(0.0, 2.0), st.floats(0.0, 100.0))
def test_factor_in_range_and_monotone(
    a: float, b: float, pool: float, rel: float, floor: float
) -> None:
    lo, hi = sorted((a, b))
    f_lo, f_hi = slow_factor(lo, pool, rel, floor), slow_factor(hi, pool, rel, floor)
    assert 0.0 <= f_hi <= f_lo <= 1.0
    assert (f_hi < 1.0) is too_slow(hi, pool, rel, floor) or f_hi == pytest.approx(1.0)
