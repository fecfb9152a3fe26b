"""Immutable views of the replicated document, for readers on the event loop.

:func:`freeze` runs in pysyncobj's thread after each applied command; the view it builds
crosses to the event loop whole, so readers never see a half-applied state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from hanode.cluster.document import OBS_FIELDS, PROTOCOL, Doc, digest
from hanode.pool.lifecycle import Desired, Observed, StandbyMode, desired_for_standby
from hanode.pool.replica import AdminState, HealthLevel, Observation, ReplicaSpec, Role, may_serve


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
    # Recovery (protocol 3; defaults where the state holds nothing yet):
    actuated: bool = False  # its node can start, stop, sleep and wake it
    standby: StandbyMode = StandbyMode.HOT  # how it waits while a standby
    desired: Desired = Desired.RUN  # what the leader (or an operator) wants of its process
    desired_by: str = ""  # "planner", "operator", "" (the role's default)
    process: Observed = Observed.UNKNOWN  # what its node last saw of the process
    process_detail: str = ""
    restart_gen: int = 0  # restart requests so far...
    restart_done: int = 0  # ...and the last one its node carried out
    # Rolling reloads (protocol 4):
    reload: str = "restart"  # how its node reloads it: "restart" or "engine" (its own call)
    reload_gen: int = 0  # engine reloads asked so far...
    reload_done: int = 0  # ...and the last one its node carried out

    @property
    def process_up(self) -> bool:
        """Its process is wanted running and its node has seen it pass its health checks
        since it was (re)started or woken (``RUNNING``; no report yet or no actuator: up).
        ``STARTING`` is not up: a woken engine's last health may be from before its sleep."""
        return self.desired is Desired.RUN and self.process in (Observed.UNKNOWN, Observed.RUNNING)

    @property
    def expected_down(self) -> bool:
        """Down on purpose (asleep, stopped, or asked to be): no incident, not lost."""
        return self.desired is not Desired.RUN or self.process.expected_down

    def may_serve(self, lost: frozenset[str] = frozenset()) -> bool:
        """The one may-serve rule (``pool.replica.may_serve``) applied to this record."""
        return may_serve(
            self.role, self.admin, self.observation, self.spec.node in lost, self.process_up
        )


@dataclass(frozen=True, slots=True)
class BreakerRecord:
    """A breaker some router opened: how long, not until when (hosts' clocks differ)."""

    replica: str
    failure_class: str
    open_s: float
    node: str
    id: str


@dataclass(frozen=True, slots=True)
class IncidentStep:
    ts: float  # the leader's wall clock when it wrote the step
    what: str  # detected | action | standby_serving | original_back | closed | ...
    message: str
    key: str


@dataclass(frozen=True, slots=True)
class IncidentRecord:
    """One loss of an active replica: its timeline, and how long capacity took to come back
    (``mttr_s``: detected to capacity restored) and the whole incident (``duration_s``)."""

    id: str
    model: str
    replica: str
    want: int  # serving replicas of the model that mean "capacity restored"
    detected: float
    restored: float | None
    closed: float | None
    mttr_s: float | None
    duration_s: float | None
    timeline: tuple[IncidentStep, ...]

    @property
    def open(self) -> bool:
        return self.closed is None

    def has(self, key: str) -> bool:
        return any(step.key == key for step in self.timeline)


@dataclass(frozen=True, slots=True)
class RolloutReplica:
    """One replica's place in a rollout (times: the leader's wall clock)."""

    name: str
    step: str  # waiting | draining | reloading | warming | ramping | done | failed
    gen: int  # the restart (or engine reload) generation the rollout asked for
    how: str  # "restart" | "engine"
    drained: bool  # the rollout took it out of routing (and must put it back)
    inflight: Mapping[str, int]  # requests still in flight on it, per node's router
    reason: str
    since: float | None
    unavailable_s: float | None


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    """A model's latest rolling reload (see ``cluster/rollout.py``)."""

    id: str
    model: str
    state: str  # running | done | failed | aborted
    by: str
    max_unavailable: int
    surge: bool
    surge_replica: str
    surge_state: str  # "" | woken | promoted | released
    drain_timeout_s: float
    started: float
    finished: float | None
    duration_s: float | None
    reason: str
    waiting: str  # why it cannot go on right now ("" while it can)
    replicas: tuple[RolloutReplica, ...]  # in reload order

    @property
    def running(self) -> bool:
        return self.state == "running"

    def step(self, name: str) -> RolloutReplica | None:
        return next((r for r in self.replicas if r.name == name), None)


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
    incidents: tuple[IncidentRecord, ...] = ()  # oldest first
    rollouts: Mapping[str, RolloutRecord] = field(default_factory=lambda: MappingProxyType({}))

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


def _enum(kind: Any, value: Any, default: Any) -> Any:
    try:
        return kind(value) if value is not None else default
    except ValueError:
        return default


def _replica(rec: Mapping[str, Any]) -> ReplicaRecord:
    raw_spec = rec["spec"]
    role = Role(rec["role"])
    actuated = bool(raw_spec.get("actuated", False))
    standby = _enum(StandbyMode, raw_spec.get("standby"), StandbyMode.HOT)
    # Without a written desired state a replica follows its role: an active runs, a standby
    # waits in its standby mode (when its node can act on it at all).
    default = desired_for_standby(standby) if actuated and role is Role.STANDBY else Desired.RUN
    proc = rec.get("proc") or {}
    return ReplicaRecord(
        spec=_spec(raw_spec),
        role=role,
        admin=AdminState(rec["admin"]),
        observation=_observation(rec["obs"]),
        observed_at=float(rec.get("obs_ts", 0.0)),
        promoted=bool(rec.get("promoted", False)),
        actuated=actuated,
        standby=standby,
        desired=_enum(Desired, rec.get("desired"), default) if actuated else Desired.RUN,
        desired_by=str(rec.get("desired_by", "")),
        process=_enum(Observed, proc.get("state"), Observed.UNKNOWN),
        process_detail=str(proc.get("detail", "")),
        restart_gen=int(rec.get("restart_gen", 0)),
        restart_done=int(proc.get("restart_done", 0)),
        reload=str(raw_spec.get("reload", "restart")),
        reload_gen=int(rec.get("reload_gen", 0)),
        reload_done=int(rec.get("reload_done", 0)),
    )


def _rollout(raw: Mapping[str, Any]) -> RolloutRecord:
    def opt(value: Any) -> float | None:
        return float(value) if value is not None else None

    steps = raw.get("replicas", {})
    return RolloutRecord(
        id=str(raw["id"]),
        model=str(raw["model"]),
        state=str(raw["state"]),
        by=str(raw.get("by", "")),
        max_unavailable=int(raw.get("max_unavailable", 1)),
        surge=bool(raw.get("surge", False)),
        surge_replica=str(raw.get("surge_replica", "")),
        surge_state=str(raw.get("surge_state", "")),
        drain_timeout_s=float(raw.get("drain_timeout_s", 60.0)),
        started=float(raw["started"]),
        finished=opt(raw.get("finished")),
        duration_s=opt(raw.get("duration_s")),
        reason=str(raw.get("reason", "")),
        waiting=str(raw.get("waiting", "")),
        replicas=tuple(
            RolloutReplica(
                name=str(name),
                step=str(steps[name]["step"]),
                gen=int(steps[name].get("gen", 0)),
                how=str(steps[name].get("how", "restart")),
                drained=bool(steps[name].get("drained", False)),
                inflight=MappingProxyType(dict(steps[name].get("inflight", {}))),
                reason=str(steps[name].get("reason", "")),
                since=opt(steps[name].get("since")),
                unavailable_s=opt(steps[name].get("unavailable_s")),
            )
            for name in raw.get("order", [])
            if name in steps
        ),
    )


def _incident(raw: Mapping[str, Any]) -> IncidentRecord:
    def opt(key: str) -> float | None:
        value = raw.get(key)
        return float(value) if value is not None else None

    return IncidentRecord(
        id=str(raw["id"]),
        model=str(raw["model"]),
        replica=str(raw["replica"]),
        want=int(raw.get("want", 1)),
        detected=float(raw["detected"]),
        restored=opt("restored"),
        closed=opt("closed"),
        mttr_s=opt("mttr_s"),
        duration_s=opt("duration_s"),
        timeline=tuple(
            IncidentStep(float(s["ts"]), str(s["what"]), str(s["message"]), str(s["key"]))
            for s in raw.get("timeline", [])
        ),
    )


# The records of the last view, by the JSON of their part of the document. A view is frozen
# after every applied command, and most commands touch one replica: building every record
# again cost ~25 us a replica (13 ms a command at 512 replicas, ``python -m bench.scale``);
# serialising one to look it up costs ~1 us. A record is a pure function of that JSON (the
# document holds JSON values only), so a record found here is the one ``_replica`` would build.
_last_records: dict[bytes, ReplicaRecord] = {}


def _replicas(raw: Mapping[str, Any]) -> dict[str, ReplicaRecord]:
    global _last_records
    previous, kept = _last_records, {}
    out: dict[str, ReplicaRecord] = {}
    for name, rec in raw.items():
        key = orjson.dumps(rec)  # the document is JSON: the digest below writes it all too
        record = previous.get(key)
        if record is None:
            record = _replica(rec)
        kept[key] = out[name] = record
    _last_records = kept  # bounded: the records of the latest view only
    return out


def freeze(doc: Doc, index: int, halted: str | None = None) -> ClusterView:
    replicas = _replicas(doc["replicas"])
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
        incidents=tuple(_incident(i) for i in doc.get("incidents", [])),
        rollouts=MappingProxyType({m: _rollout(r) for m, r in doc.get("rollouts", {}).items()}),
    )
