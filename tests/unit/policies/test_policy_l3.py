"""L3 range check: every broken limit is named, unknown values pass, latency is per token and
relative to the pool, end-to-end latency is never judged."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.l3 import L3Thresholds, evaluate_l3
from hanode.policies.latency import PoolLatency
from hanode.pool.replica import HealthLevel, Observation

T = L3Thresholds()


def obs(
    ttft_ms: float | None = None,
    kv_usage: float | None = None,
    queue_depth: float | None = None,
    gpu_mem_frac: float | None = None,
    gpu_growth: float | None = None,
    tpot_ms: float | None = None,
    latency_ms: float | None = None,
) -> Observation:
    return Observation(
        level=HealthLevel.HEALTHY,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
        kv_usage=kv_usage,
        queue_depth=queue_depth,
        gpu_mem_frac=gpu_mem_frac,
        gpu_growth=gpu_growth,
    )


def test_all_unknown_is_in_range() -> None:
    assert evaluate_l3(obs(), T) == (True, "")
    assert evaluate_l3(obs(), T, PoolLatency(100.0, 5.0)) == (True, "")


def test_values_at_the_limits_are_in_range() -> None:
    assert evaluate_l3(obs(1000.0, 0.90, 32.0, 0.90, 0.05), T) == (True, "")


def test_long_answers_are_not_slow() -> None:
    """A 30 s end-to-end answer at its peers' TPOT is in range (it used to break 2000 ms)."""
    o = obs(latency_ms=30_000.0, tpot_ms=5.0)
    assert evaluate_l3(o, T, PoolLatency(tpot_ms=5.0)) == (True, "")


@pytest.mark.parametrize(
    ("o", "reason"),
    [
        (obs(ttft_ms=1500.0), "ttft 1500ms > 1000ms"),
        (obs(kv_usage=0.97), "kv 0.97 > 0.90"),
        (obs(queue_depth=40.0), "queue 40 > 32"),
        (obs(gpu_mem_frac=0.93), "gpu_mem 0.93 > 0.90"),
        (obs(gpu_growth=0.08), "gpu_growth 0.08 > 0.05"),
        (obs(kv_usage=0.9004), "kv 0.9004 > 0.9000"),  # never "0.90 > 0.90"
        (obs(ttft_ms=1000.2), "ttft 1000.2ms > 1000.0ms"),
    ],
)
def test_each_limit(o: Observation, reason: str) -> None:
    assert evaluate_l3(o, T) == (False, reason)


def test_relative_limits_name_the_pool_and_the_allowance() -> None:
    pool = PoolLatency(ttft_ms=400.0, tpot_ms=5.0)
    assert evaluate_l3(obs(tpot_ms=15.0), T, pool) == (
        False,
        "tpot 15.0ms > pool 5.0ms + 2.0ms",
    )
    assert evaluate_l3(obs(ttft_ms=900.0), T, pool) == (
        False,
        "ttft 900.0ms > pool 400.0ms + 40.0ms",
    )


@pytest.mark.parametrize(("tpot", "ok"), [(6.9, True), (7.0, True), (7.1, False)])
def test_tpot_floor(tpot: float, ok: bool) -> None:
    """5 ms pool + the 2 ms floor (10% of 5 ms is less): a tiny absolute difference passes."""
    assert evaluate_l3(obs(tpot_ms=tpot), T, PoolLatency(tpot_ms=5.0))[0] is ok


def test_every_broken_limit_is_named() -> None:
    ok, reason = evaluate_l3(obs(2000.0, 0.99, 50.0, 0.94, 0.2, 30.0), T, PoolLatency(None, 5.0))
    assert not ok
    assert reason == (
        "ttft 2000ms > 1000ms; kv 0.99 > 0.90; queue 50 > 32; gpu_mem 0.94 > 0.90; "
        "gpu_growth 0.20 > 0.05; tpot 30.0ms > pool 5.0ms + 2.0ms"
    )


def test_nan_counts_as_unknown() -> None:
    nan = math.nan
    assert evaluate_l3(obs(nan, nan, nan, nan, nan, nan), T, PoolLatency(nan, nan)) == (True, "")


def test_custom_thresholds() -> None:
    assert evaluate_l3(obs(ttft_ms=600.0), L3Thresholds(ttft_ms=500.0))[0] is False
    assert evaluate_l3(obs(ttft_ms=600.0), L3Thresholds(ttft_ms=700.0))[0] is True


value = st.none() | st.floats(allow_nan=True, allow_infinity=True)


@given(value, value, value, value, value)
def test_in_range_iff_no_known_value_above_its_limit(
    ttft: float | None, kv: float | None, q: float | None, gpu: float | None, grow: float | None
) -> None:
    ok, reason = evaluate_l3(obs(ttft, kv, q, gpu, grow), T)
    pairs = [
        (ttft, T.ttft_ms),
        (kv, T.kv_usage),
        (q, T.queue_depth),
        (gpu, T.gpu_mem),
        (grow, T.gpu_growth),
    ]
    broken = sum(1 for v, lim in pairs if v is not None and not math.isnan(v) and v > lim)
    assert ok is (broken == 0)
    assert (reason == "") is ok
    assert (len(reason.split("; ")) if reason else 0) == broken
