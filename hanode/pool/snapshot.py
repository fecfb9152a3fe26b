"""The immutable pool snapshot the router reads without locks.

Whoever owns the pool (the local health loop now, the replicated cluster state later) builds a
new :class:`PoolSnapshot` after every change and swaps it in with a single attribute store. Readers
on the event loop take ``view.snapshot`` once per request and never see a half-applied update.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from hanode.pool.replica import AdminState, Observation, ReplicaSpec, Role


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One replica as the router sees it: configuration, live role/admin, observation, weight."""

    spec: ReplicaSpec
    role: Role
    admin: AdminState
    observation: Observation
    weight: float

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """The replicas that may take traffic for one model, with cumulative weights for picking."""

    model: str
    names: tuple[str, ...]
    weights: tuple[float, ...]
    cumulative: tuple[float, ...]

    @property
    def total(self) -> float:
        return self.cumulative[-1] if self.cumulative else 0.0

    @classmethod
    def build(cls, model: str, weighted: Mapping[str, float]) -> ModelRoute:
        """Keep only positive weights: a replica with weight 0 can never be picked."""
        items = sorted((n, w) for n, w in weighted.items() if w > 0.0)
        names = tuple(n for n, _ in items)
        weights = tuple(w for _, w in items)
        return cls(model, names, weights, tuple(itertools.accumulate(weights)))


_EMPTY: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    version: int = 0
    replicas: Mapping[str, ReplicaState] = field(default_factory=lambda: MappingProxyType({}))
    routes: Mapping[str, ModelRoute] = field(default_factory=lambda: MappingProxyType({}))
    models: tuple[str, ...] = ()  # every configured model, served or not

    @classmethod
    def build(cls, version: int, states: Mapping[str, ReplicaState]) -> PoolSnapshot:
        by_model: dict[str, dict[str, float]] = {}
        for n, s in states.items():  # one pass: O(replicas), not O(models x replicas)
            by_model.setdefault(s.spec.model, {})[n] = s.weight
        models = sorted(by_model)
        routes = {m: ModelRoute.build(m, by_model[m]) for m in models}
        return cls(
            version=version,
            replicas=MappingProxyType(dict(states)),
            routes=MappingProxyType(routes),
            models=tuple(models),
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Picklable (a node sends its snapshots to its data-plane workers)."""
        return _restore, (self.version, dict(self.replicas), dict(self.routes), self.models)

    def served_models(self) -> tuple[str, ...]:
        """Models with at least one replica that may take traffic now."""
        return tuple(m for m in self.models if self.routes[m].names)


class PoolView(Protocol):
    """The router's one window on the pool: a current snapshot, read without locks."""

    @property
    def snapshot(self) -> PoolSnapshot: ...


def _restore(
    version: int,
    replicas: dict[str, ReplicaState],
    routes: dict[str, ModelRoute],
    models: tuple[str, ...],
) -> PoolSnapshot:
    return PoolSnapshot(version, MappingProxyType(replicas), MappingProxyType(routes), models)
