"""L3 range check: every broken limit is named, unknown values pass."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.l3 import L3Thresholds, evaluate_l3
from hanode.pool.replica import HealthLevel, Observation

T = L3Thresholds()


def obs(
    latency_ms: float | None = None,
    ttft_ms: float | None = None,
    kv_usage: float | None = None,
    queue_depth: float | None = None,
    gpu_mem_frac: float | None = None,
) -> Observation:
    return Observation(
        level=HealthLevel.HEALTHY,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        kv_usage=kv_usage,
        queue_depth=queue_depth,
        gpu_mem_frac=gpu_mem_frac,
    )


def test_all_unknown_is_in_range() -> None:
    assert evaluate_l3(obs(), T) == (True, "")


def test_values_at_the_limits_are_in_range() -> None:
    assert evaluate_l3(obs(2000.0, 1000.0, 0.90, 32.0, 0.90), T) == (True, "")


def test_reason_example_from_the_spec() -> None:
    assert evaluate_l3(obs(latency_ms=2500.0, kv_usage=0.95), T) == (
        False,
        "latency 2500ms > 2000ms; kv 0.95 > 0.90",
    )


@pytest.mark.parametrize(
    ("o", "reason"),
    [
        (obs(latency_ms=2001.0), "latency 2001ms > 2000ms"),
        (obs(ttft_ms=1500.0), "ttft 1500ms > 1000ms"),
        (obs(kv_usage=0.97), "kv 0.97 > 0.90"),
        (obs(queue_depth=40.0), "queue 40 > 32"),
        (obs(gpu_mem_frac=0.93), "gpu_mem 0.93 > 0.90"),
        (obs(kv_usage=0.9004), "kv 0.9004 > 0.9000"),  # never "0.90 > 0.90"
        (obs(latency_ms=2000.2), "latency 2000.2ms > 2000.0ms"),
    ],
)
def test_each_limit(o: Observation, reason: str) -> None:
    assert evaluate_l3(o, T) == (False, reason)


def test_every_broken_limit_is_named() -> None:
    ok, reason = evaluate_l3(obs(3000.0, 2000.0, 0.99, 50.0, 0.94), T)
    assert not ok
    assert reason == (
        "latency 3000ms > 2000ms; ttft 2000ms > 1000ms; kv 0.99 > 0.90; "
        "queue 50 > 32; gpu_mem 0.94 > 0.90"
    )


def test_nan_counts_as_unknown() -> None:
    assert evaluate_l3(obs(math.nan, math.nan, math.nan, math.nan, math.nan), T) == (True, "")


def test_custom_thresholds() -> None:
    assert evaluate_l3(obs(latency_ms=600.0), L3Thresholds(latency_ms=500.0))[0] is False
    assert evaluate_l3(obs(latency_ms=600.0), L3Thresholds(latency_ms=700.0))[0] is True


value = st.none() | st.floats(allow_nan=True, allow_infinity=True)


@given(value, value, value, value, value)
def test_in_range_iff_no_known_value_above_its_limit(
    lat: float | None, ttft: float | None, kv: float | None, q: float | None, gpu: float | None
) -> None:
    ok, reason = evaluate_l3(obs(lat, ttft, kv, q, gpu), T)
    pairs = [
        (lat, T.latency_ms),
        (ttft, T.ttft_ms),
        (kv, T.kv_usage),
        (q, T.queue_depth),
        (gpu, T.gpu_mem),
    ]
    broken = sum(1 for v, lim in pairs if v is not None and not math.isnan(v) and v > lim)
    assert ok is (broken == 0)
    assert (reason == "") is ok
    assert (len(reason.split("; ")) if reason else 0) == broken
