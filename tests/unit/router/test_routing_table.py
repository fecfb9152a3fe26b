"""Routing table: snapshot weights times local breaker factors; restarted replicas start afresh."""

from __future__ import annotations

from collections.abc import Sequence

from hanode.policies.breaker import BreakerConfig, Transition
from hanode.policies.failure import FailureClass
from hanode.pool.replica import AdminState, HealthLevel, Observation, ReplicaSpec, Role
from hanode.pool.snapshot import PoolSnapshot, ReplicaState
from hanode.router.registry import ReplicaRegistry
from hanode.router.routing_table import RoutingTable


class View:
    def __init__(self) -> None:
        self.snapshot = PoolSnapshot()

    def set(self, version: int, **levels: HealthLevel) -> None:
        states = {
            name: ReplicaState(
                ReplicaSpec(name, "m", f"http://127.0.0.1:{8000 + i}"),
                Role.ACTIVE,
                AdminState.ENABLED,
                Observation(level=level),
                1.0 if level.serving else 0.0,
            )
            for i, (name, level) in enumerate(sorted(levels.items()))
        }
        self.snapshot = PoolSnapshot.build(version, states)


def test_open_breaker_takes_replica_out_of_the_route() -> None:
    view = View()
    view.set(1, a=HealthLevel.HEALTHY, b=HealthLevel.HEALTHY)
    registry = ReplicaRegistry(view, BreakerConfig())
    table = RoutingTable(view, registry, clock=lambda: 0.0)
    assert table.route("m", 0.0).names == ("a", "b")  # type: ignore[union-attr]
    registry.breaker("a").on_failure(FailureClass.CONNECTION, 0.0, refused=True)
    table.invalidate()
    assert table.route("m", 0.1).names == ("b",)  # type: ignore[union-attr]


def test_replica_back_from_down_gets_a_fresh_breaker() -> None:
    resets: list[tuple[str, Sequence[Transition]]] = []
    view = View()
    view.set(1, a=HealthLevel.HEALTHY, b=HealthLevel.HEALTHY)
    registry = ReplicaRegistry(view, BreakerConfig(open_base_s=30))
    table = RoutingTable(
        view,
        registry,
        clock=lambda: 0.0,
        on_reset=lambda r, ts: resets.append((r, ts)),
    )
    table.route("m", 0.0)
    registry.breaker("a").on_failure(FailureClass.CONNECTION, 0.0, refused=True)
    view.set(2, a=HealthLevel.DOWN, b=HealthLevel.HEALTHY)
    assert table.route("m", 1.0).names == ("b",)  # type: ignore[union-attr]
    view.set(3, a=HealthLevel.HEALTHY, b=HealthLevel.HEALTHY)
    assert table.route("m", 2.0).names == ("a", "b")  # type: ignore[union-attr]
    assert [r for r, _ in resets] == ["a"]
    assert registry.breaker("a").allow(2.0)


def test_oom_breaker_is_not_reset_by_health_alone() -> None:
    """Health probes pass while a replica OOMs under load: only a return from DOWN resets."""
    view = View()
    view.set(1, a=HealthLevel.HEALTHY, b=HealthLevel.HEALTHY)
    registry = ReplicaRegistry(view, BreakerConfig(oom_trip_count=1, open_base_s=30))
    table = RoutingTable(view, registry, clock=lambda: 0.0)
    table.route("m", 0.0)
    registry.breaker("a").on_failure(FailureClass.GPU_OOM, 0.0)
    view.set(2, a=HealthLevel.DEGRADED, b=HealthLevel.HEALTHY)
    table.route("m", 1.0)
    view.set(3, a=HealthLevel.HEALTHY, b=HealthLevel.HEALTHY)
    assert table.route("m", 2.0).names == ("b",)  # type: ignore[union-attr]
