"""The standalone pool: weights from observations, and slow start for a replica back in
service (not for the first reports at start)."""

from __future__ import annotations

import pytest

from hanode.policies.slow_start import SlowStart
from hanode.pool.replica import HealthLevel, Observation, ReplicaSpec
from hanode.standalone.pool import LocalPool

UP = Observation(level=HealthLevel.HEALTHY)
DOWN = Observation(level=HealthLevel.DOWN, reason="L1: refused")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def weights(pool: LocalPool) -> dict[str, float]:
    return {n: round(s.weight, 3) for n, s in pool.snapshot.replicas.items()}


def test_a_replica_back_in_service_ramps_up_and_the_first_reports_do_not() -> None:
    clock = Clock()
    specs = [
        ReplicaSpec("a", "m", "http://127.0.0.1:1"),
        ReplicaSpec("b", "m", "http://127.0.0.1:2"),
    ]
    pool = LocalPool(specs, slow_start=SlowStart(10.0), clock=clock)
    pool.observe("a", UP)
    pool.observe("b", UP)
    assert weights(pool) == {"a": 1.0, "b": 1.0}  # at start: no ramp
    pool.observe("b", DOWN)
    assert weights(pool)["b"] == 0.0
    clock.now = 1.0
    pool.observe("b", UP)
    assert weights(pool)["b"] == pytest.approx(0.1)
    clock.now = 6.0  # read later: rebuilt on the way
    assert weights(pool)["b"] == pytest.approx(0.5)
    version = pool.snapshot.version
    clock.now = 11.5
    assert weights(pool) == {"a": 1.0, "b": 1.0}
    assert pool.snapshot.version == version  # a ramp step is no new pool version


def test_without_slow_start_weights_are_the_policys() -> None:
    pool = LocalPool([ReplicaSpec("a", "m", "http://127.0.0.1:1")])
    pool.observe("a", DOWN)
    pool.observe("a", UP)
    assert weights(pool) == {"a": 1.0}
