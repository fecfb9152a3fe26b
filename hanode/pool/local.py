"""The single-node pool owner: configured replicas + local observations -> snapshots.

Health checkers report observations here; each change recomputes weights (pure policy) and
publishes a fresh immutable :class:`PoolSnapshot`. In a cluster the same role is played by the
replicated state machine; the router cannot tell the difference (it only sees ``PoolView``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from hanode.policies.weights import WeightInput, WeightThresholds, compute_weights
from hanode.pool.replica import AdminState, Observation, ReplicaSpec, Role
from hanode.pool.snapshot import PoolSnapshot, ReplicaState

Listener = Callable[[PoolSnapshot], None]


class LocalPool:
    def __init__(
        self, specs: Iterable[ReplicaSpec], thresholds: WeightThresholds | None = None
    ) -> None:
        self._specs = {s.name: s for s in specs}
        self._roles = {name: s.role for name, s in self._specs.items()}
        self._admin = dict.fromkeys(self._specs, AdminState.ENABLED)
        self._obs = {name: Observation() for name in self._specs}
        self._thresholds = thresholds or WeightThresholds()
        self._listeners: list[Listener] = []
        self._version = 0
        self.snapshot = self._build()

    @property
    def specs(self) -> dict[str, ReplicaSpec]:
        return dict(self._specs)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def observe(self, name: str, observation: Observation) -> None:
        if self._obs.get(name) == observation:
            return
        self._obs[name] = observation
        self._publish()

    def set_admin(self, name: str, admin: AdminState) -> None:
        if self._admin[name] != admin:
            self._admin[name] = admin
            self._publish()

    def set_role(self, name: str, role: Role) -> None:
        if self._roles[name] != role:
            self._roles[name] = role
            self._publish()

    def _build(self) -> PoolSnapshot:
        inputs = {
            name: WeightInput(spec.model, self._roles[name], self._admin[name], self._obs[name])
            for name, spec in self._specs.items()
        }
        weights = compute_weights(inputs, self._thresholds)
        states = {
            name: ReplicaState(
                spec, self._roles[name], self._admin[name], self._obs[name], weights[name]
            )
            for name, spec in self._specs.items()
        }
        return PoolSnapshot.build(self._version, states)

    def _publish(self) -> None:
        self._version += 1
        self.snapshot = self._build()
        for listener in self._listeners:
            listener(self.snapshot)
