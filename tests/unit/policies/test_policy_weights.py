"""Weights: the seed example, each factor, the zero cases and properties over random pools."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hanode.policies.latency import PoolLatency
from hanode.policies.weights import (
    WeightInput,
    WeightThresholds,
    compute_weights,
    replica_weight,
)
from hanode.pool.replica import AdminState, HealthLevel, Observation, Role

T = WeightThresholds()


def serving(
    gpu_mem_frac: float | None = None,
    kv_usage: float | None = None,
    queue_depth: float | None = None,
    ttft_ms: float | None = None,
    tpot_ms: float | None = None,
) -> Observation:
    return Observation(
        level=HealthLevel.HEALTHY,
        gpu_mem_frac=gpu_mem_frac,
        kv_usage=kv_usage,
        queue_depth=queue_depth,
        ttft_ms=ttft_ms,
        tpot_ms=tpot_ms,
    )


def ttft_pool(ms: float | None) -> PoolLatency:
    return PoolLatency(ttft_ms=ms)


def inp(
    obs: Observation,
    model: str = "m",
    role: Role = Role.ACTIVE,
    admin: AdminState = AdminState.ENABLED,
) -> WeightInput:
    return WeightInput(model=model, role=role, admin=admin, observation=obs)


# ---------------------------------------------------------------- examples


# The seed's table (pressure and TTFT as hanode now defines them): test_seed_table.py


def test_all_unknown_serving_replica_gets_full_weight() -> None:
    assert replica_weight(serving(), None, T) == 1.0


@pytest.mark.parametrize(
    ("gpu", "factor"),
    [
        (0.0, 1.0),
        (0.79, 1.0),
        (0.80, 1.0),
        (0.85, 0.85),
        (0.8999, 0.7003),
        (0.90, 0.25),
        (0.94, 0.25),
    ],
)
def test_gpu_memory_factor(gpu: float, factor: float) -> None:
    assert replica_weight(serving(gpu_mem_frac=gpu), None, T) == pytest.approx(factor)


@pytest.mark.parametrize("gpu", [0.95, 0.99, 1.0, 1.5, math.inf])
def test_gpu_memory_at_remove_mark_gives_zero(gpu: float) -> None:
    assert replica_weight(serving(gpu_mem_frac=gpu), 100.0, T) == 0.0


@pytest.mark.parametrize(
    ("kv", "factor"),
    [(0.0, 1.0), (0.85, 1.0), (0.925, 0.65), (1.0, 0.3), (1.7, 0.3), (math.inf, 0.3)],
)
def test_kv_factor(kv: float, factor: float) -> None:
    assert replica_weight(serving(kv_usage=kv), None, T) == pytest.approx(factor)


@pytest.mark.parametrize(("queue", "factor"), [(0.0, 1.0), (16.0, 0.5), (48.0, 0.25)])
def test_queue_factor(queue: float, factor: float) -> None:
    assert replica_weight(serving(queue_depth=queue), None, T) == pytest.approx(factor)


@pytest.mark.parametrize(
    ("ttft", "pool", "factor"),
    [
        (1000.0, 500.0, 500.0 / 950.0),  # beyond the 10% allowance: pool / (value - allowance)
        (550.0, 500.0, 1.0),  # within 10% of the pool: the same
        (551.0, 500.0, 500.0 / 501.0),  # just past it: no jump
        (500.0, 500.0, 1.0),
        (100.0, 500.0, 1.0),  # faster than the pool is not rewarded above 1
        (4.0, 3.0, 1.0),  # 1 ms more is under the 20 ms floor: no whole-millisecond effect
        (30.0, 3.0, 3.0 / 10.0),  # 27 ms more is not
        (1000.0, None, 1.0),
        (None, 500.0, 1.0),
        (0.0, 0.0, 1.0),
    ],
)
def test_ttft_factor(ttft: float | None, pool: float | None, factor: float) -> None:
    assert replica_weight(serving(ttft_ms=ttft), ttft_pool(pool), T) == pytest.approx(factor)


@pytest.mark.parametrize(
    ("tpot", "pool", "factor"),
    [
        (15.0, 5.0, 5.0 / 13.0),  # three times its peers' TPOT (allowance: the 2 ms floor)
        (6.0, 5.0, 1.0),  # 1 ms more per token is under the floor
        (5.0, 5.0, 1.0),
    ],
)
def test_tpot_factor(tpot: float, pool: float, factor: float) -> None:
    obs = serving(tpot_ms=tpot)
    assert replica_weight(obs, PoolLatency(tpot_ms=pool), T) == pytest.approx(factor)


def test_end_to_end_latency_is_not_judged() -> None:
    """A long answer is not a slow replica: latency_ms is shown, never weighed."""
    w = compute_weights(
        {
            "long": inp(replace(serving(ttft_ms=20.0, tpot_ms=5.0), latency_ms=20_000.0)),
            "short": inp(replace(serving(ttft_ms=20.0, tpot_ms=5.0), latency_ms=100.0)),
        }
    )
    assert w == {"long": 1.0, "short": 1.0}


def test_factors_multiply_and_memory_takes_the_weaker_view() -> None:
    obs = serving(gpu_mem_frac=0.85, kv_usage=0.925, queue_depth=16.0, ttft_ms=1000.0)
    # memory: min(pressure 0.85, KV 0.65); queue 0.5; TTFT 500 / (1000 - 50)
    assert replica_weight(obs, ttft_pool(500.0), T) == pytest.approx(0.65 * 0.5 * 500.0 / 950.0)


def test_reserving_engine_pressure_is_kv_and_not_counted_twice() -> None:
    """For vLLM/SGLang the pressure figure is the KV use: the reduce mark's 0.25, not less."""
    assert replica_weight(serving(gpu_mem_frac=0.92, kv_usage=0.92), None, T) == 0.25


def test_floor_keeps_a_bad_serving_replica_in_rotation() -> None:
    obs = serving(gpu_mem_frac=0.92, kv_usage=1.0, queue_depth=1000.0, ttft_ms=1e9)
    assert replica_weight(obs, ttft_pool(100.0), T) == T.min_weight
    assert replica_weight(obs, ttft_pool(100.0), WeightThresholds(min_weight=0.2)) == 0.2


@pytest.mark.parametrize("bad", [math.nan, -1.0, -math.inf])
def test_nan_and_negative_inputs_count_as_unknown(bad: float) -> None:
    for field in ("gpu_mem_frac", "kv_usage", "queue_depth", "ttft_ms", "tpot_ms"):
        obs = replace(serving(), **{field: bad})  # type: ignore[arg-type]
        assert replica_weight(obs, PoolLatency(100.0, 100.0), T) == 1.0, field
    assert replica_weight(serving(ttft_ms=1000.0), ttft_pool(bad), T) == 1.0


@pytest.mark.parametrize("level", [HealthLevel.DOWN, HealthLevel.UNREADY])
def test_not_serving_gives_zero(level: HealthLevel) -> None:
    assert replica_weight(Observation(level=level), None, T) == 0.0


def test_degraded_still_serves() -> None:
    assert replica_weight(Observation(level=HealthLevel.DEGRADED), None, T) == 1.0


def test_drained_and_standby_get_zero() -> None:
    w = compute_weights(
        {
            "drained": inp(serving(), admin=AdminState.DRAINED),
            "standby": inp(serving(), role=Role.STANDBY),
            "ok": inp(serving()),
        }
    )
    assert w == {"drained": 0.0, "standby": 0.0, "ok": 1.0}


def test_pool_latency_ignores_drained_standby_and_down_peers() -> None:
    # Only "a" and "b" are eligible: pool = median(400, 800) = 600 -> b gets 600/(800 - 60).
    w = compute_weights(
        {
            "a": inp(serving(ttft_ms=400.0)),
            "b": inp(serving(ttft_ms=800.0)),
            "drained": inp(serving(ttft_ms=10.0), admin=AdminState.DRAINED),
            "standby": inp(serving(ttft_ms=10.0), role=Role.STANDBY),
            "down": inp(Observation(level=HealthLevel.DOWN, ttft_ms=10.0)),
        }
    )
    assert w["b"] == pytest.approx(600.0 / 740.0)


def test_pool_latency_is_per_model() -> None:
    w = compute_weights(
        {
            "small": inp(serving(ttft_ms=100.0, tpot_ms=3.0), model="small"),
            "big1": inp(serving(ttft_ms=3000.0, tpot_ms=80.0), model="big"),
            "big2": inp(serving(ttft_ms=3000.0, tpot_ms=80.0), model="big"),
        }
    )
    assert w == {"small": 1.0, "big1": 1.0, "big2": 1.0}


def test_infinite_latency_scores_floor_and_does_not_skew_pool() -> None:
    w = compute_weights(
        {
            "a": inp(serving(tpot_ms=math.inf)),
            "b": inp(serving(tpot_ms=400.0)),
            "c": inp(serving(tpot_ms=800.0)),
        }
    )
    assert w["a"] == T.min_weight
    # pool = median(400, 800), not median(400, 800, inf)
    assert w["c"] == pytest.approx(600.0 / 740.0)


@pytest.mark.parametrize(
    "kw",
    [
        {"gpu_mem_prepare": 0.9, "gpu_mem_reduce": 0.8},
        {"gpu_mem_reduce": 0.96},
        {"gpu_mem_prepare": -0.1},
        {"kv_high": 1.1},
        {"queue_high": 0.0},
        {"min_weight": 0.0},
        {"min_weight": 1.5},
        {"kv_high": math.nan},
    ],
)
def test_thresholds_are_validated(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        WeightThresholds(**kw)


def test_degenerate_but_valid_thresholds_do_not_divide_by_zero() -> None:
    t = WeightThresholds(gpu_mem_prepare=0.9, gpu_mem_reduce=0.9, kv_high=1.0)
    assert replica_weight(serving(gpu_mem_frac=0.9, kv_usage=1.0), None, t) == 0.25


# ---------------------------------------------------------------- properties

# Anything a broken or hostile metric source could hand us.
any_float = st.none() | st.floats(allow_nan=True, allow_infinity=True)
# Band edges and their neighbours, where a wrong comparison or factor would show.
gpu_fracs = st.floats(min_value=0.0, max_value=1.2) | st.sampled_from(
    [0.5, 0.8, 0.85, 0.8999, 0.9, 0.92, 0.9499, 0.95, 1.0]
)
frac = st.none() | gpu_fracs | st.sampled_from([math.nan, -0.5])
# A few shared values so that peers tie, straddle each other and sit at infinity.
latencies = any_float | st.sampled_from([100.0, 400.0, 800.0, 1200.0, math.inf])
# Skewed towards replicas that take traffic: those are the ones with interesting weights.
levels = st.sampled_from([HealthLevel.HEALTHY, HealthLevel.DEGRADED]) | st.sampled_from(HealthLevel)
observations = st.builds(
    Observation,
    level=levels,
    gpu_mem_frac=frac,
    kv_usage=frac,
    queue_depth=any_float,
    latency_ms=any_float,
    ttft_ms=latencies,
    tpot_ms=latencies,
)
inputs = st.builds(
    WeightInput,
    model=st.sampled_from(["m1", "m2"]),
    role=st.just(Role.ACTIVE) | st.sampled_from(Role),
    admin=st.just(AdminState.ENABLED) | st.sampled_from(AdminState),
    observation=observations,
)
pools = st.dictionaries(st.sampled_from("abcdefgh"), inputs, min_size=1)


def forced_zero(i: WeightInput, t: WeightThresholds) -> bool:
    gpu = i.observation.gpu_mem_frac
    return (
        not i.observation.level.serving
        or i.admin is AdminState.DRAINED
        or i.role is Role.STANDBY
        or (gpu is not None and gpu >= t.gpu_mem_remove)
    )


@given(pools)
def test_weights_bounded_and_zero_exactly_when_required(pool: dict[str, WeightInput]) -> None:
    w = compute_weights(pool, T)
    assert w.keys() == pool.keys()
    for name, weight in w.items():
        assert not math.isnan(weight)
        assert 0.0 <= weight <= 1.0
        if forced_zero(pool[name], T):
            assert weight == 0.0
        else:
            assert weight >= T.min_weight


@given(observations, any_float)
def test_replica_weight_bounded(obs: Observation, pool_latency: float | None) -> None:
    w = replica_weight(obs, PoolLatency(pool_latency, pool_latency), T)
    assert 0.0 <= w <= 1.0  # also false for NaN


@given(
    pools,
    st.sampled_from("abcdefgh"),
    st.floats(min_value=0.0, allow_infinity=True) | st.sampled_from([100.0, 400.0, math.inf]),
    st.floats(min_value=0.0, max_value=1e6) | st.sampled_from([100.0, 400.0, 800.0]),
)
def test_raising_latency_never_raises_weight(
    pool: dict[str, WeightInput], name: str, delta: float, start: float
) -> None:
    assume(name in pool)
    obs = pool[name].observation
    lat = obs.ttft_ms
    if lat is None or math.isnan(lat) or lat < 0:
        lat = start
    before = replace(pool[name], observation=replace(obs, ttft_ms=lat))
    after = replace(pool[name], observation=replace(obs, ttft_ms=lat + delta))
    w_before = compute_weights({**pool, name: before}, T)[name]
    w_after = compute_weights({**pool, name: after}, T)[name]
    assert w_after <= w_before


@given(
    pools,
    st.sampled_from("abcdefgh"),
    gpu_fracs,
    gpu_fracs,
)
def test_raising_gpu_memory_never_raises_weight(
    pool: dict[str, WeightInput], name: str, g1: float, g2: float
) -> None:
    assume(name in pool)
    lo, hi = sorted((g1, g2))
    base = pool[name]
    low = replace(base, observation=replace(base.observation, gpu_mem_frac=lo))
    high = replace(base, observation=replace(base.observation, gpu_mem_frac=hi))
    assert (
        compute_weights({**pool, name: high}, T)[name]
        <= compute_weights({**pool, name: low}, T)[name]
    )


@given(observations, latencies, gpu_fracs, gpu_fracs)
def test_replica_weight_never_rises_with_gpu_memory(
    obs: Observation, pool_latency: float | None, g1: float, g2: float
) -> None:
    lo, hi = sorted((g1, g2))
    pool = PoolLatency(pool_latency, pool_latency)
    w_low = replica_weight(replace(obs, gpu_mem_frac=lo), pool, T)
    w_high = replica_weight(replace(obs, gpu_mem_frac=hi), pool, T)
    assert w_high <= w_low


@given(observations, latencies, latencies, latencies)
def test_replica_weight_never_rises_with_latency(
    obs: Observation, pool_latency: float | None, l1: float | None, l2: float | None
) -> None:
    known = sorted(x for x in (l1, l2) if x is not None and not math.isnan(x) and x >= 0)
    if len(known) < 2:
        return
    lo, hi = known
    pool = PoolLatency(pool_latency, pool_latency)
    for field in ("ttft_ms", "tpot_ms"):
        w_low = replica_weight(replace(obs, **{field: lo}), pool, T)  # type: ignore[arg-type]
        w_high = replica_weight(replace(obs, **{field: hi}), pool, T)  # type: ignore[arg-type]
        assert w_high <= w_low


def test_gpu_removed_flag_zeroes_weight_even_below_remove_mark() -> None:
    """Hysteresis: a replica the GPU gate removed stays out until memory recovers."""
    t = WeightThresholds()
    obs = Observation(level=HealthLevel.HEALTHY, gpu_mem_frac=0.92, gpu_removed=True)
    assert replica_weight(obs, None, t) == 0.0
    assert replica_weight(Observation(level=HealthLevel.HEALTHY, gpu_mem_frac=0.92), None, t) > 0
