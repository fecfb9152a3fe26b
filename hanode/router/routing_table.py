"""Effective routes: the pool snapshot's weights times each replica's local breaker factor.

The snapshot says what the pool (later: the cluster) decided; local breakers say what this
router saw in the last seconds. A route is rebuilt only when either changes, so the per-request
cost stays one dict lookup. While some factor is recovering (gradual OOM recovery) or a pause
is pending, the table refreshes itself at most every ``refresh_s``.
"""

from __future__ import annotations

from collections.abc import Callable

from hanode.policies.breaker import BreakerConfig, ReplicaBreaker
from hanode.pool.snapshot import ModelRoute, PoolSnapshot, PoolView


class RoutingTable:
    def __init__(
        self,
        view: PoolView,
        breaker_config: BreakerConfig,
        clock: Callable[[], float],
        refresh_s: float = 0.25,
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
