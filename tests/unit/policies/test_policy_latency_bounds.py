"""Histogram figures are only known within their bucket: never slow by resolution alone.

vLLM's first TPOT bucket is 0-10 ms, so PromQL's interpolation puts the median of a 1.5 ms TPOT
at 5 ms. Judged as if measured, an idle replica read that way was DEGRADED against peers
measured at 1.5 ms ("tpot 5.0ms > pool 1.5ms + 2.0ms"), a resolution artefact.
"""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hanode.engines.prom_text import histogram_bucket
from hanode.policies.l3 import L3Thresholds, evaluate_l3
from hanode.policies.latency import (
    Figure,
    LatencyTolerance,
    PoolLatency,
    figure,
    figure_factor,
    figure_too_slow,
    latency_factor,
    pool_latency,
    slow_factor,
    too_slow,
)
from hanode.pool.replica import HealthLevel, Observation

T = LatencyTolerance()  # 10%, floors 20 ms TTFT / 2 ms TPOT
L3 = L3Thresholds()


def measured(tpot: float) -> Observation:
    return Observation(level=HealthLevel.HEALTHY, tpot_ms=tpot)


def bucketed(estimate: float, lo: float, hi: float | None) -> Observation:
    return Observation(level=HealthLevel.HEALTHY, tpot_ms=estimate, tpot_lo_ms=lo, tpot_hi_ms=hi)


IDLE = bucketed(5.0, 0.0, 10.0)  # a 1.5 ms TPOT in vLLM's first bucket, interpolated


def test_figure_reads_the_observation() -> None:
    assert figure(1.5) == Figure(1.5, 1.5, 1.5, exact=True)
    assert figure(5.0, 0.0, 10.0) == Figure(5.0, 0.0, 10.0, exact=False)
    assert figure(80.0, 80.0, None) == Figure(80.0, 80.0, math.inf, exact=False)  # +Inf bucket
    # Bounds that do not hold the estimate (a broken or hand-made document) are widened.
    assert figure(5.0, 7.0, 4.0) == Figure(5.0, 5.0, 5.0, exact=False)
    assert figure(5.0, math.nan, math.nan) == Figure(5.0, 0.0, math.inf, exact=False)
    assert figure(None, 0.0, 10.0) is None and figure(math.nan) is None and figure(-1.0) is None


def test_first_bucket_against_measured_peers_is_not_slow() -> None:
    """The defect seen in e2e: the old rule (the estimate taken as measured) called it slow."""
    pool = pool_latency([IDLE, measured(1.5), measured(1.5)])
    assert pool == PoolLatency(tpot_ms=1.5)  # the histogram figure does not drag the median
    assert too_slow(5.0, 1.5, T.latency_tolerance, T.tpot_floor_ms)  # what went wrong before
    assert latency_factor(IDLE, pool, T) == 1.0
    assert evaluate_l3(IDLE, L3, pool) == (True, "")


def test_histogram_figures_stay_out_of_the_median_either_way() -> None:
    high = bucketed(37.5, 25.0, 50.0)
    assert pool_latency([high, measured(4.0), measured(6.0)]).tpot_ms == 5.0  # not dragged up
    assert pool_latency([IDLE, measured(4.0), measured(6.0)]).tpot_ms == 5.0  # nor down


def test_a_slow_histogram_figure_is_still_slow() -> None:
    """Its bucket's lower edge is 3x the measured pool: slow whatever the truth in the bucket."""
    slow = bucketed(17.5, 10.0, 25.0)
    pool = pool_latency([slow, measured(10 / 3), measured(10 / 3)])
    assert pool.tpot_ms == pytest.approx(10 / 3) and pool.tpot_hi_ms is None
    ok, reason = evaluate_l3(slow, L3, pool)
    assert not ok
    assert reason == "tpot >= 10.0ms (engine histogram) > pool 3.3ms + 2.0ms"
    # Judged on the lower edge: (10/3) / (10 - 2), not on the 17.5 ms estimate.
    assert latency_factor(slow, pool, T) == pytest.approx((10 / 3) / 8.0)


def test_pool_of_histograms_only_is_judged_by_its_upper_bound() -> None:
    """Every replica idle: the median's upper bound is the reference, so a replica is slow only
    when even its lower edge is past what the pool can at most be."""
    pool = pool_latency([IDLE, IDLE, bucketed(37.5, 25.0, 50.0)])
    assert pool == PoolLatency(tpot_ms=5.0, tpot_hi_ms=10.0)
    assert not figure_too_slow(figure(17.5, 10.0, 25.0), 5.0, 10.0, 0.1, 2.0)  # 10 vs <= 10
    ok, reason = evaluate_l3(bucketed(37.5, 25.0, 50.0), L3, pool)
    assert not ok and reason == (
        "tpot >= 25.0ms (engine histogram) > pool <= 10.0ms (engine histograms) + 2.0ms"
    )
    unbounded = pool_latency([bucketed(80.0, 80.0, None)] * 2 + [IDLE])
    assert unbounded.tpot_hi_ms == math.inf
    assert not figure_too_slow(figure(100.0, 100.0, None), 80.0, math.inf, 0.1, 2.0)


def test_measured_figures_are_judged_as_before() -> None:
    for value, pool in ((4.0, 3.0), (15.0, 5.0), (110.5, 100.0)):
        fig = figure(value)
        assert figure_factor(fig, pool, None, 0.1, 2.0) == slow_factor(value, pool, 0.1, 2.0)
        assert figure_too_slow(fig, pool, None, 0.1, 2.0) is too_slow(value, pool, 0.1, 2.0)


edges_ms = st.lists(st.floats(0.01, 1e5), min_size=1, max_size=12, unique=True).map(sorted)
true_ms = st.floats(0.001, 2e5)


def read_through_histogram(value: float, edges: list[float]) -> Observation:
    """One replica's TPOT as the checker gets it from an engine: a histogram of it, median."""
    buckets = (*((le, 1.0 if value <= le else 0.0) for le in edges), (math.inf, 1.0))
    q = histogram_bucket(None, buckets, 0.5)
    assert q is not None and q.lo <= value <= q.hi
    return bucketed(q.value, q.lo, None if math.isinf(q.hi) else q.hi)


@given(
    true_ms,
    st.lists(st.tuples(true_ms, st.booleans()), min_size=0, max_size=6),
    st.booleans(),
    edges_ms,
    st.floats(0.0, 1.0),
    st.floats(0.0, 50.0),
)
# All idle: their interpolated 5 ms would make a 12 ms replica (lower edge 10) slow against
# peers really at 9 ms, which it is not (9 + 3 >= 12).
@example(12.0, [(9.0, True), (9.0, True)], True, [10.0, 20.0], 0.0, 3.0)
# The defect seen in e2e: 1.5 ms everywhere, this one read through vLLM's first bucket.
@example(1.5, [(1.5, False), (1.5, False)], True, [10.0, 25.0], 0.1, 2.0)
def test_slow_by_bounds_means_slow_in_truth(
    mine: float,
    peers: list[tuple[float, bool]],
    mine_from_histogram: bool,
    edges: list[float],
    rel: float,
    floor: float,
) -> None:
    """Whatever the buckets: if the bounds call a replica slow, its true TPOT is slow against
    the true median of the reference (the measured replicas, or all when none is), and its
    weight factor is never below what its true TPOT would give."""
    figures = [(mine, mine_from_histogram), *((v, h) for v, h in peers)]
    obs = [read_through_histogram(v, edges) if h else measured(v) for v, h in figures]
    pool = pool_latency(obs)
    exact = [v for v, h in figures if not h]
    truth = statistics.median(exact or [v for v, _ in figures])
    fig = figure(obs[0].tpot_ms, obs[0].tpot_lo_ms, obs[0].tpot_hi_ms)
    if figure_too_slow(fig, pool.tpot_ms, pool.tpot_hi_ms, rel, floor):
        assert too_slow(mine, truth, rel, floor)
    bounded = figure_factor(fig, pool.tpot_ms, pool.tpot_hi_ms, rel, floor)
    assert 0.0 <= bounded <= 1.0
    assert bounded >= slow_factor(mine, truth, rel, floor) - 1e-9
