"""Immutable views of the replicated document, for readers on the event loop.

:func:`freeze` runs in pysyncobj's thread after each applied command; the view it builds
crosses to the event loop whole, so readers never see a half-applied state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hanode.cluster.document import OBS_FIELDS, PROTOCOL, Doc, digest
from hanode.pool.replica import AdminState, HealthLevel, Observation, ReplicaSpec, Role


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    raft: str = ""
    api: str = ""
    router: str = ""
    ops: str = ""
    protocol: int = 1
    lost: bool = False  # the leader has not heard from it for a lease


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    spec: ReplicaSpec
    role: Role
    admin: AdminState
    observation: Observation
    observed_at: float
    promoted: bool  # promoted by the planner (so the planner may demote it again)


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """A breaker some router opened: how long, not until when (hosts' clocks differ)."""

    replica: str
    failure_class: str
    open_s: float
    node: str
    id: str


@dataclass(frozen=True, slots=True)
class ClusterView:
    index: int = 0
    nodes: Mapping[str, NodeRecord] = field(default_factory=lambda: MappingProxyType({}))
    replicas: Mapping[str, ReplicaRecord] = field(default_factory=lambda: MappingProxyType({}))
    weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    breakers: Mapping[str, BreakerRecord] = field(default_factory=lambda: MappingProxyType({}))
    resets: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    events: tuple[Mapping[str, Any], ...] = ()
    leader_node: str = ""  # the leader as recorded by its claim (fencing)
    leader_term: int = 0
    digest: str = ""
    halted: str | None = None  # why this node stopped applying commands, if it did
    checkpoint_id: str = ""  # the leader's last checkpoint, and the digests nodes reported
    checkpoint_reports: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def cluster_version(self) -> int:
        """The lowest protocol among the registered nodes: what every member can apply."""
        return min((n.protocol for n in self.nodes.values()), default=PROTOCOL)

    @property
    def lost_nodes(self) -> frozenset[str]:
        return frozenset(n for n, rec in self.nodes.items() if rec.lost)


def _spec(raw: Mapping[str, Any]) -> ReplicaSpec:
    gpu = raw.get("gpu")
    return ReplicaSpec(
        name=str(raw["name"]),
        model=str(raw["model"]),
        url=str(raw["url"]),
        engine=str(raw.get("engine", "vllm")),
        role=Role(raw.get("role", "active")),
        gpu=int(gpu) if gpu is not None else None,
        node=str(raw.get("node", "")),
    )


def _observation(raw: Mapping[str, Any]) -> Observation:
    values: dict[str, Any] = {k: raw.get(k) for k in OBS_FIELDS}
    return Observation(
        level=HealthLevel(int(raw.get("level", 0))),
        gpu_removed=bool(raw.get("gpu_removed", False)),
        reason=str(raw.get("reason", "")),
        **values,
    )


def _node(name: str, raw: Mapping[str, Any]) -> NodeRecord:
    return NodeRecord(
        name=name,
        raft=str(raw.get("raft", "")),
        api=str(raw.get("api", "")),
        router=str(raw.get("router", "")),
        ops=str(raw.get("ops", "")),
        protocol=int(raw.get("protocol", 1)),
        lost=bool(raw.get("lost", False)),
    )


def freeze(doc: Doc, index: int, halted: str | None = None) -> ClusterView:
    replicas = {
        name: ReplicaRecord(
            spec=_spec(rec["spec"]),
            role=Role(rec["role"]),
            admin=AdminState(rec["admin"]),
            observation=_observation(rec["obs"]),
            observed_at=float(rec.get("obs_ts", 0.0)),
            promoted=bool(rec.get("promoted", False)),
        )
        for name, rec in doc["replicas"].items()
    }
    breakers = {
        name: BreakerRecord(
            name, str(b["failure_class"]), float(b["open_s"]), str(b["node"]), str(b["id"])
        )
        for name, b in doc["breakers"].items()
    }
    leader = doc.get("leader") or {}
    checkpoint = doc.get("checkpoint") or {}
    return ClusterView(
        index=index,
        nodes=MappingProxyType({n: _node(n, v) for n, v in doc["nodes"].items()}),
        replicas=MappingProxyType(replicas),
        weights=MappingProxyType(dict(doc["weights"])),
        breakers=MappingProxyType(breakers),
        resets=MappingProxyType(dict(doc.get("resets", {}))),
        events=tuple(MappingProxyType(dict(e)) for e in doc["events"][-200:]),
        leader_node=str(leader.get("node", "")),
        leader_term=int(leader.get("term", 0)),
        digest=digest(doc),
        halted=halted,
        checkpoint_id=str(checkpoint.get("id", "")),
        checkpoint_reports=MappingProxyType(dict(checkpoint.get("reports", {}))),
    )
