"""Effective routes: the pool snapshot's weights times each replica's local breaker factor.

The snapshot says what the pool (later: the cluster) decided; local breakers say what this
router saw in the last seconds. A route is rebuilt only when either changes, so the per-request
cost stays one dict lookup. While some factor is recovering (gradual OOM recovery) or a pause
is pending, the table refreshes itself at most every ``refresh_s``. The breakers are the
replica registry's; the table also keeps the registry's specs current with each new snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hanode.policies.breaker import Transition
from hanode.pool.replica import HealthLevel
from hanode.pool.snapshot import ModelRoute, PoolSnapshot, PoolView
from hanode.router.registry import ReplicaRegistry

ResetListener = Callable[[str, Sequence[Transition]], None]


class RoutingTable:
    def __init__(
        self,
        view: PoolView,
        registry: ReplicaRegistry,
        clock: Callable[[], float],
        refresh_s: float = 0.25,
        on_reset: ResetListener | None = None,
    ) -> None:
        self._view = view
        self._registry = registry
        self._clock = clock
        self._refresh_s = refresh_s
        self._routes: dict[str, ModelRoute] = {}
        self._version = -1
        self._dirty = True
        self._refresh_at = 0.0
        self._on_reset = on_reset
        self._levels: dict[str, HealthLevel] = {}

    def invalidate(self) -> None:
        """A breaker changed state or factor: rebuild routes before the next pick."""
        self._dirty = True

    def route(self, model: str, now: float) -> ModelRoute | None:
        snap = self._view.snapshot
        if self._dirty or snap.version != self._version or now >= self._refresh_at:
            self._rebuild(snap, now)
        return self._routes.get(model)

    def _rebuild(self, snap: PoolSnapshot, now: float) -> None:
        registry = self._registry
        if snap.version != self._version:
            registry.sync(snap)
            self._reset_restarted(snap, now)
        weighted: dict[str, dict[str, float]] = {m: {} for m in snap.models}
        transient = False
        for name, state in snap.replicas.items():
            weight = state.weight
            replica = registry.find(name)
            if replica is not None and weight > 0.0:
                factor = replica.breaker.weight_factor(now)
                if factor < 1.0:
                    transient = True
                weight *= factor
            weighted.setdefault(state.spec.model, {})[name] = weight
        self._routes = {m: ModelRoute.build(m, w) for m, w in weighted.items()}
        self._version = snap.version
        self._dirty = False
        self._refresh_at = now + (self._refresh_s if transient else 1.0)

    def _reset_restarted(self, snap: PoolSnapshot, now: float) -> None:
        """A replica back from DOWN (its process failed L1) and serving again is a new
        process: what its breaker remembers was about the dead one, so start afresh."""
        for name, state in snap.replicas.items():
            level = state.observation.level
            before = self._levels.get(name)
            self._levels[name] = level
            replica = self._registry.find(name)
            if before is HealthLevel.DOWN and level.serving and replica is not None:
                transitions = replica.breaker.reset(now)
                if transitions and self._on_reset is not None:
                    self._on_reset(name, transitions)
