"""One object per replica: everything this router keeps about it, in one place.

A :class:`Replica` holds the replica's spec, its breaker, its upstream connection pool, its
engine adapter and the tries in flight on it. Entries are made the first time anything asks
for one (a pick, a breaker sync from the cluster), as breakers always were: a replica nobody
has routed to has no entry, and status shows its breaker as plainly closed.

In-flight counts are read through the replica but stored in one name -> count dict
(:attr:`ReplicaRegistry.inflight`): the picker (a pure policy) compares two of them by name on
every request, and a plain dict keeps that a C lookup; status and metrics read the same dict.

Passive traffic statistics stay in :mod:`hanode.health.passive`: the health checkers own their
windows and read them by name, and the router feeds them through a narrow ``record`` call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from hanode.engines.base import EngineAdapter
from hanode.engines.registry import get_adapter
from hanode.http.client import split_url
from hanode.policies.breaker import BreakerConfig, ReplicaBreaker
from hanode.pool.replica import ReplicaSpec
from hanode.pool.snapshot import PoolSnapshot, PoolView
from hanode.router.upstream import UpstreamPool


class Try(Protocol):
    """A try in flight on a replica, which can be failed over when the replica is found dead."""

    def replica_dead(self, why: str) -> None: ...


class Replica:
    """This router's state of one replica. Pool and adapter are made on first use."""

    __slots__ = (
        "_adapter",
        "_connect_timeout_s",
        "_counts",
        "_pool",
        "breaker",
        "name",
        "spec",
        "tries",
    )

    def __init__(
        self,
        name: str,
        spec: ReplicaSpec | None,
        breaker: ReplicaBreaker,
        counts: dict[str, int],
        connect_timeout_s: float,
    ) -> None:
        self.name = name
        self.spec = spec  # None until the pool view names it (a breaker synced from a peer)
        self.breaker = breaker
        self.tries: set[Try] = set()
        self._counts = counts
        self._connect_timeout_s = connect_timeout_s
        self._pool: UpstreamPool | None = None
        self._adapter: EngineAdapter | None = None

    @property
    def inflight(self) -> int:
        """Requests this router has in flight on the replica."""
        return self._counts.get(self.name, 0)

    def upstream(self, spec: ReplicaSpec) -> UpstreamPool:
        """The keep-alive pool to the replica, made from ``spec`` (its current one) on first use."""
        pool = self._pool
        if pool is None:
            host, port, _ = split_url(spec.url)
            pool = self._pool = UpstreamPool(host, port, self._connect_timeout_s)
        return pool

    def adapter(self) -> EngineAdapter:
        """How to read the replica's errors; a generic OpenAI one while its engine is unknown."""
        adapter = self._adapter
        if adapter is None:
            spec = self.spec
            adapter = self._adapter = get_adapter(spec.engine if spec else "openai")
        return adapter

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


class ReplicaRegistry:
    """The router's replicas by name. Called from the event loop only."""

    def __init__(
        self, view: PoolView, breaker: BreakerConfig, connect_timeout_s: float = 2.0
    ) -> None:
        self._view = view
        self._breaker_config = breaker
        self._connect_timeout_s = connect_timeout_s
        self._by_name: dict[str, Replica] = {}
        self.inflight: dict[str, int] = {}

    def get(self, name: str) -> Replica:
        """The replica's entry, made now if this is the first time it is asked for."""
        replica = self._by_name.get(name)
        return replica if replica is not None else self._add(name)

    def find(self, name: str) -> Replica | None:
        """The replica's entry if it has one; never makes one."""
        return self._by_name.get(name)

    def breaker(self, name: str) -> ReplicaBreaker:
        return self.get(name).breaker

    def breakers(self) -> dict[str, ReplicaBreaker]:
        """Name -> breaker of every replica with an entry (for status; a copy)."""
        return {name: r.breaker for name, r in self._by_name.items()}

    def __iter__(self) -> Iterator[Replica]:
        return iter(self._by_name.values())

    def sync(self, snap: PoolSnapshot) -> None:
        """A new pool snapshot: keep each entry's spec current (a gone replica keeps its last)."""
        replicas = snap.replicas
        for name, replica in self._by_name.items():
            state = replicas.get(name)
            if state is not None and state.spec is not replica.spec:
                replica.spec = state.spec

    def close(self) -> None:
        for replica in self._by_name.values():
            replica.close()

    def _add(self, name: str) -> Replica:
        state = self._view.snapshot.replicas.get(name)
        replica = self._by_name[name] = Replica(
            name,
            state.spec if state is not None else None,
            ReplicaBreaker(self._breaker_config),
            self.inflight,
            self._connect_timeout_s,
        )
        return replica
