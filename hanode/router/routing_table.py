"""Effective routes: the pool snapshot's weights times each replica's local breaker factor.

The snapshot says what the pool (later: the cluster) decided; local breakers say what this
router saw in the last seconds. A route is rebuilt only when either changes, so the per-request
cost stays one dict lookup. While some factor is recovering (gradual OOM recovery) or a pause
is pending, the table refreshes itself at most every ``refresh_s``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hanode.policies.breaker import BreakerConfig, ReplicaBreaker, Transition
from hanode.pool.replica import HealthLevel
from hanode.pool.snapshot import ModelRoute, PoolSnapshot, PoolView

ResetListener = Callable[[str, Sequence[Transition]], None]


class RoutingTable:
    def __init__(
        self,
        view: PoolView,
        breaker_config: BreakerConfig,
        clock: Callable[[], float],
        refresh_s: float = 0.25,
        on_reset: ResetListener | None = None,
    ) -> None:
        self._view = view
        self._config = breaker_config
        self._clock = clock
        self._refresh_s = refresh_s
        self.breakers: dict[str, ReplicaBreaker] = {}
        self._routes: dict[str, ModelRoute] = {}
        self._version = -1
        self._dirty = True
        self._refresh_at = 0.0
        self._on_reset = on_reset
        self._levels: dict[str, HealthLevel] = {}

    def breaker(self, replica: str) -> ReplicaBreaker:
        b = self.breakers.get(replica)
        if b is None:
            b = self.breakers[replica] = ReplicaBreaker(self._config)
        return b

    def invalidate(self) -> None:
        """A breaker changed state or factor: rebuild routes before the next pick."""
        self._dirty = True

    def route(self, model: str, now: float) -> ModelRoute | None:
        snap = self._view.snapshot
        if self._dirty or snap.version != self._version or now >= self._refresh_at:
            self._rebuild(snap, now)
        return self._routes.get(model)

    def _rebuild(self, snap: PoolSnapshot, now: float) -> None:
        if snap.version != self._version:
            self._reset_restarted(snap, now)
        weighted: dict[str, dict[str, float]] = {m: {} for m in snap.models}
        transient = False
        for name, state in snap.replicas.items():
            weight = state.weight
            breaker = self.breakers.get(name)
            if breaker is not None and weight > 0.0:
                factor = breaker.weight_factor(now)
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
            breaker = self.breakers.get(name)
            if before is HealthLevel.DOWN and level.serving and breaker is not None:
                transitions = breaker.reset(now)
                if transitions and self._on_reset is not None:
                    self._on_reset(name, transitions)
