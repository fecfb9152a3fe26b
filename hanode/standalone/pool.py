"""The single-node pool owner: configured replicas + local observations -> snapshots.

Health checkers report observations here; each change recomputes weights (pure policy) and
publishes a fresh immutable :class:`PoolSnapshot`. A standalone node has no control API, so
roles come from the configuration and nothing is drained. In a cluster the same part is
played by the replicated state machine; the router cannot tell the difference (it only sees
``PoolView``).

Slow start: a replica that comes (back) into service after the first observations gets a
growing share of its weight over ``slow_start.window_s`` (``policies.slow_start``); while one
ramps, reading ``snapshot`` rebuilds it at most every ``RAMP_REFRESH_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from hanode.policies.slow_start import SlowStart, ramping
from hanode.policies.weights import WeightInput, WeightThresholds, compute_weights
from hanode.pool.replica import AdminState, Observation, ReplicaSpec
from hanode.pool.snapshot import PoolSnapshot, ReplicaState

RAMP_REFRESH_S = 0.5


class LocalPool:
    def __init__(
        self,
        specs: Iterable[ReplicaSpec],
        thresholds: WeightThresholds | None = None,
        slow_start: SlowStart | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._specs = {s.name: s for s in specs}
        self._obs = {name: Observation() for name in self._specs}
        self._thresholds = thresholds or WeightThresholds()
        self._slow_start = slow_start or SlowStart(0.0)
        self._clock = clock
        self._version = 0
        self._seen: set[str] = set()  # replicas that have reported at least once
        self._serving: set[str] = set()
        self._since: dict[str, float] = {}  # ramping replicas: when they came into service
        self._built_at = 0.0
        self._snapshot = self._build()

    @property
    def snapshot(self) -> PoolSnapshot:
        if self._since and self._clock() - self._built_at >= RAMP_REFRESH_S:
            self._snapshot = self._build()
        return self._snapshot

    def observe(self, name: str, observation: Observation) -> None:
        if self._obs.get(name) == observation:
            return
        self._obs[name] = observation
        self._version += 1
        self._snapshot = self._build()

    def _build(self) -> PoolSnapshot:
        now = self._built_at = self._clock()
        inputs = {
            name: WeightInput(spec.model, spec.role, AdminState.ENABLED, self._obs[name])
            for name, spec in self._specs.items()
        }
        weights = compute_weights(inputs, self._thresholds)
        serving = {n for n, w in weights.items() if w > 0.0}
        if self._slow_start.window_s > 0.0:
            for name in serving - self._serving:
                if name in self._seen:  # back in service (not the first report at start)
                    self._since[name] = now
        self._seen |= {n for n, o in self._obs.items() if o != Observation()}
        self._serving = serving
        ramp = ramping(
            {n: t for n, t in self._since.items() if n in serving}, now, self._slow_start
        )
        self._since = {n: self._since[n] for n in ramp}
        states = {
            name: ReplicaState(
                spec,
                spec.role,
                AdminState.ENABLED,
                self._obs[name],
                weights[name] * ramp.get(name, 1.0),
            )
            for name, spec in self._specs.items()
        }
        return PoolSnapshot.build(self._version, states)
