"""The seed's table, with pressure and latency as hanode defines them now.

Three vLLM replicas that reserve 90% of their GPUs (NVML reads about 0.9 on every one, at any
load). Pressure is the KV use inside the reservation; latency is time to first token judged
against the pool's median with the tolerance. The seed: 65% / 450 ms full share, 89% / 1200 ms
about a quarter, 45% / 380 ms full share.
"""

from __future__ import annotations

import pytest

from hanode.policies.memory import PressureSource, memory_pressure, reserving
from hanode.policies.weights import WeightInput, compute_weights
from hanode.pool.replica import AdminState, HealthLevel, Observation, Role

DEVICE_USED = 0.905  # what NVML says on a vLLM host at --gpu-memory-utilization 0.9
RESERVED = 0.9  # vLLM's cache_config_info gpu_memory_utilization label


def replica(kv: float, ttft_ms: float) -> WeightInput:
    pressure, source = memory_pressure(reserving(True, RESERVED), kv, DEVICE_USED)
    assert source is PressureSource.KV
    obs = Observation(
        level=HealthLevel.HEALTHY, gpu_mem_frac=pressure, kv_usage=kv, ttft_ms=ttft_ms
    )
    return WeightInput("llama-8b", Role.ACTIVE, AdminState.ENABLED, obs)


def test_seed_table() -> None:
    w = compute_weights(
        {"a": replica(0.65, 450.0), "b": replica(0.89, 1200.0), "c": replica(0.45, 380.0)}
    )
    assert w["a"] == pytest.approx(1.0)
    assert w["c"] == pytest.approx(1.0)
    assert 0.2 <= w["b"] <= 0.3  # about a quarter: 0.73 (pressure) x 450 / (1200 - 45)


def test_idle_reserving_fleet_is_not_under_pressure() -> None:
    """NVML at 90% and no load: full share for everyone (it used to be cut at the 90% mark)."""
    w = compute_weights({n: replica(0.0, 30.0) for n in "abc"})
    assert w == {"a": 1.0, "b": 1.0, "c": 1.0}
