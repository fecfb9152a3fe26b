"""The single-node pool owner: configured replicas + local observations -> snapshots.

Health checkers report observations here; each change recomputes weights (pure policy) and
publishes a fresh immutable :class:`PoolSnapshot`. A standalone node has no control API, so
roles come from the configuration and nothing is drained. In a cluster the same part is
played by the replicated state machine; the router cannot tell the difference (it only sees
``PoolView``).
"""

from __future__ import annotations

from collections.abc import Iterable

from hanode.policies.weights import WeightInput, WeightThresholds, compute_weights
from hanode.pool.replica import AdminState, Observation, ReplicaSpec
from hanode.pool.snapshot import PoolSnapshot, ReplicaState


class LocalPool:
    def __init__(
        self, specs: Iterable[ReplicaSpec], thresholds: WeightThresholds | None = None
    ) -> None:
        self._specs = {s.name: s for s in specs}
        self._obs = {name: Observation() for name in self._specs}
        self._thresholds = thresholds or WeightThresholds()
        self._version = 0
        self.snapshot = self._build()

    def observe(self, name: str, observation: Observation) -> None:
        if self._obs.get(name) == observation:
            return
        self._obs[name] = observation
        self._version += 1
        self.snapshot = self._build()

    def _build(self) -> PoolSnapshot:
        inputs = {
            name: WeightInput(spec.model, spec.role, AdminState.ENABLED, self._obs[name])
            for name, spec in self._specs.items()
        }
        weights = compute_weights(inputs, self._thresholds)
        states = {
            name: ReplicaState(spec, spec.role, AdminState.ENABLED, self._obs[name], weights[name])
            for name, spec in self._specs.items()
        }
        return PoolSnapshot.build(self._version, states)
