"""The replicated cluster state and the commands that change it.

The state is a plain document (dicts, lists, str, float, bool): it is what the Raft log
replays and what the full dump pickles, so it stays version-tolerant and safe to load.
:func:`apply` is the state machine: deterministic, no clock, no I/O, and idempotent (applying a
command twice leaves the same state), because a consensus timeout is an unknown outcome and the
caller may repeat the command.

Readers never see the document: :func:`freeze` turns it into an immutable
:class:`ClusterView` after each applied command.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hanode.pool.replica import AdminState, HealthLevel, Observation, ReplicaSpec, Role

MAX_EVENTS = 500

Doc = dict[str, Any]
Command = dict[str, Any]

_OBS_FIELDS = (
    "gpu_mem_frac",
    "kv_usage",
    "queue_depth",
    "running",
    "latency_ms",
    "ttft_ms",
)


def empty_doc() -> Doc:
    return {"nodes": {}, "replicas": {}, "weights": {}, "breakers": {}, "events": [], "seq": 0}


class CommandError(ValueError):
    """A command that cannot apply (unknown replica, bad shape). The state is unchanged."""


# -- the state machine ------------------------------------------------------------------------
def apply(doc: Doc, cmd: Command) -> Any:
    """Apply ``cmd`` to ``doc`` in place; returns the command's result (or raises CommandError)."""
    op = cmd.get("op")
    handler = _HANDLERS.get(op) if isinstance(op, str) else None
    if handler is None:
        raise CommandError(f"unknown command {op!r}")
    return handler(doc, cmd)


def _event(doc: Doc, ts: float, kind: str, subject: str, message: str, **fields: Any) -> None:
    doc["seq"] = int(doc.get("seq", 0)) + 1
    events: list[dict[str, Any]] = doc["events"]
    events.append(
        {
            "seq": doc["seq"],
            "ts": ts,
            "kind": kind,
            "subject": subject,
            "message": message,
            "fields": fields,
        }
    )
    if len(events) > MAX_EVENTS:
        del events[: len(events) - MAX_EVENTS]


def _replica(doc: Doc, name: Any) -> dict[str, Any]:
    rec = doc["replicas"].get(name) if isinstance(name, str) else None
    if rec is None:
        raise CommandError(f"unknown replica {name!r}")
    rec_: dict[str, Any] = rec
    return rec_


def _register_node(doc: Doc, cmd: Command) -> None:
    name = str(cmd["name"])
    info = {k: str(cmd.get(k, "")) for k in ("raft", "api", "router", "ops")}
    known = doc["nodes"].get(name)
    doc["nodes"][name] = info
    if known is None:
        _event(doc, float(cmd["ts"]), "membership", name, "node registered", **info)


def _register_replica(doc: Doc, cmd: Command) -> None:
    """Add a replica, or refresh its configuration; role and admin state survive restarts."""
    spec = cmd["spec"]
    name = str(spec["name"])
    rec = doc["replicas"].get(name)
    if rec is None:
        doc["replicas"][name] = {
            "spec": dict(spec),
            "role": str(spec.get("role", "active")),
            "admin": "enabled",
            "obs": {"level": 0},
            "obs_ts": 0.0,
            "promoted": False,
        }
        _event(doc, float(cmd["ts"]), "membership", name, "replica registered", node=spec["node"])
    else:
        rec["spec"] = dict(spec)


def _observe(doc: Doc, cmd: Command) -> None:
    rec = _replica(doc, cmd["replica"])
    old_level = int(rec["obs"].get("level", 0))
    obs = {"level": int(cmd["obs"]["level"])}
    for key in (*_OBS_FIELDS, "gpu_removed", "reason"):
        if key in cmd["obs"]:
            obs[key] = cmd["obs"][key]
    rec["obs"] = obs
    rec["obs_ts"] = float(cmd["ts"])
    if old_level != obs["level"]:
        _event(
            doc,
            float(cmd["ts"]),
            "health",
            str(cmd["replica"]),
            f"{HealthLevel(old_level).name} -> {HealthLevel(obs['level']).name}"
            + (f": {obs.get('reason')}" if obs.get("reason") else ""),
        )


def _set_admin(doc: Doc, cmd: Command) -> list[str]:
    admin = AdminState(cmd["admin"]).value
    names = cmd["replicas"]
    for name in names:
        _replica(doc, name)
    changed = []
    for name in names:
        rec = doc["replicas"][name]
        if rec["admin"] != admin:
            rec["admin"] = admin
            changed.append(name)
            _event(doc, float(cmd["ts"]), "admin", name, f"{admin} by {cmd.get('by', '?')}")
    return list(names)


def _set_role(doc: Doc, cmd: Command) -> bool:
    rec = _replica(doc, cmd["replica"])
    role = Role(cmd["role"]).value
    if rec["role"] == role:
        return False
    rec["role"] = role
    rec["promoted"] = bool(cmd.get("planned", False)) and role == Role.ACTIVE.value
    _event(
        doc,
        float(cmd["ts"]),
        "role",
        str(cmd["replica"]),
        f"{'promoted' if role == 'active' else 'demoted'}: {cmd.get('reason', '')}",
        role=role,
        by=cmd.get("by", ""),
    )
    return True


def _set_weights(doc: Doc, cmd: Command) -> None:
    weights = {str(k): float(v) for k, v in cmd["weights"].items() if k in doc["replicas"]}
    doc["weights"] = weights


def _open_breaker(doc: Doc, cmd: Command) -> bool:
    """Record a breaker some router opened; a later ``until`` extends, an earlier one is ignored."""
    name = str(cmd["replica"])
    _replica(doc, name)
    current = doc["breakers"].get(name)
    until = float(cmd["until"])
    if current is not None and float(current["until"]) >= until:
        return False
    doc["breakers"][name] = {
        "failure_class": str(cmd["failure_class"]),
        "until": until,
        "node": str(cmd.get("node", "")),
        "opened": float(cmd["ts"]),
    }
    if current is None:
        _event(
            doc,
            float(cmd["ts"]),
            "breaker",
            name,
            f"opened by {cmd.get('node', '?')} ({cmd['failure_class']})",
            failure_class=cmd["failure_class"],
        )
    return True


def _reset_breaker(doc: Doc, cmd: Command) -> bool:
    name = str(cmd["replica"])
    _replica(doc, name)
    removed = doc["breakers"].pop(name, None) is not None
    resets = doc.setdefault("resets", {})
    repeated = resets.get(name) == float(cmd["ts"])  # the same command again: no new event
    resets[name] = float(cmd["ts"])
    if not repeated:
        _event(doc, float(cmd["ts"]), "breaker", name, f"reset by {cmd.get('by', '?')}")
    return removed


def _expire_breakers(doc: Doc, cmd: Command) -> None:
    now = float(cmd["ts"])
    for name in [n for n, b in doc["breakers"].items() if float(b["until"]) <= now]:
        del doc["breakers"][name]


def _forget_node(doc: Doc, cmd: Command) -> list[str]:
    """A node left the cluster for good: drop it and its replicas (it re-registers if it
    ever comes back)."""
    name = str(cmd["name"])
    gone = sorted(n for n, r in doc["replicas"].items() if r["spec"].get("node") == name)
    for replica in gone:
        del doc["replicas"][replica]
        doc["weights"].pop(replica, None)
        doc["breakers"].pop(replica, None)
    if doc["nodes"].pop(name, None) is not None:
        _event(doc, float(cmd["ts"]), "membership", name, "node removed", replicas=gone)
    return gone


def _add_event(doc: Doc, cmd: Command) -> None:
    _event(
        doc,
        float(cmd["ts"]),
        str(cmd["kind"]),
        str(cmd["subject"]),
        str(cmd["message"]),
        **dict(cmd.get("fields", {})),
    )


_HANDLERS = {
    "register_node": _register_node,
    "register_replica": _register_replica,
    "observe": _observe,
    "set_admin": _set_admin,
    "set_role": _set_role,
    "set_weights": _set_weights,
    "open_breaker": _open_breaker,
    "reset_breaker": _reset_breaker,
    "expire_breakers": _expire_breakers,
    "add_event": _add_event,
    "forget_node": _forget_node,
}


# -- immutable views for readers --------------------------------------------------------------
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
    replica: str
    failure_class: str
    until: float  # wall clock
    node: str
    opened: float


@dataclass(frozen=True, slots=True)
class ClusterView:
    index: int = 0
    nodes: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    replicas: Mapping[str, ReplicaRecord] = field(default_factory=lambda: MappingProxyType({}))
    weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    breakers: Mapping[str, BreakerRecord] = field(default_factory=lambda: MappingProxyType({}))
    resets: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    events: tuple[Mapping[str, Any], ...] = ()


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
    values: dict[str, Any] = {k: raw.get(k) for k in _OBS_FIELDS}
    return Observation(
        level=HealthLevel(int(raw.get("level", 0))),
        gpu_removed=bool(raw.get("gpu_removed", False)),
        reason=str(raw.get("reason", "")),
        **values,
    )


def spec_doc(spec: ReplicaSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "model": spec.model,
        "url": spec.url,
        "engine": spec.engine,
        "role": spec.role.value,
        "gpu": spec.gpu,
        "node": spec.node,
    }


def observation_doc(obs: Observation) -> dict[str, Any]:
    out: dict[str, Any] = {"level": int(obs.level), "reason": obs.reason}
    for key in _OBS_FIELDS:
        value = getattr(obs, key)
        if value is not None:
            out[key] = value
    if obs.gpu_removed:
        out["gpu_removed"] = True
    return out


def freeze(doc: Doc, index: int) -> ClusterView:
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
        name: BreakerRecord(name, b["failure_class"], float(b["until"]), b["node"], b["opened"])
        for name, b in doc["breakers"].items()
    }
    return ClusterView(
        index=index,
        nodes=MappingProxyType({n: MappingProxyType(dict(v)) for n, v in doc["nodes"].items()}),
        replicas=MappingProxyType(replicas),
        weights=MappingProxyType(dict(doc["weights"])),
        breakers=MappingProxyType(breakers),
        resets=MappingProxyType(dict(doc.get("resets", {}))),
        events=tuple(MappingProxyType(dict(e)) for e in doc["events"][-200:]),
    )
