"""Plain dicts (the ControlBackend's vocabulary) <-> hanode.v1 protobuf messages.

The server turns backend dicts into messages; hanodectl turns messages back into dicts of the
same shape as the status document (``hanode.status.status_document`` plus ``freshness``), so
``hanodectl status --json`` reads like the node's own document. Absent numbers travel as unset
proto3 ``optional`` fields and come back as ``None``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from hanode._proto.hanode.v1 import control_pb2 as pb

__all__ = [
    "breaker_from_proto",
    "breaker_to_proto",
    "event_from_proto",
    "event_to_proto",
    "incident_from_proto",
    "incident_to_proto",
    "member_from_proto",
    "member_to_proto",
    "pb",
    "status_from_proto",
    "status_to_proto",
]


# ------------------------------------------------------------------ helpers


def _opt_float(value: Any) -> float | None:
    """A finite float, or None for "not known" (None, NaN, junk)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _uint(value: Any) -> int:
    """A uint64 field: junk, negatives and infinities are 0, huge numbers the maximum."""
    try:
        return min(2**64 - 1, max(0, int(value or 0)))
    except (TypeError, ValueError, OverflowError):
        return 0


def _struct_value(value: Any) -> Any:
    """What a Struct can hold: non-finite numbers (any node may have written them into an
    event) become strings, integers beyond a double's range strings too."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return str(value)
    if isinstance(value, dict):
        return {str(k): _struct_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_struct_value(v) for v in value]
    return value


def _jsonable(fields: Any) -> dict[str, Any]:
    """Event fields as JSON values (Struct takes nothing else); odd objects become strings,
    a value that is not a mapping is kept under ``value``."""
    if not isinstance(fields, Mapping):
        fields = {"value": fields}
    text = json.dumps(dict(fields), default=str, allow_nan=True)
    loaded: dict[str, Any] = _struct_value(json.loads(text))
    return loaded


def _unfloat(value: Any) -> Any:
    """Struct stores every number as a double: give whole numbers back as ints."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _unfloat(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unfloat(v) for v in value]
    return value


def _optional(msg: Any, field: str) -> Any:
    return getattr(msg, field) if msg.HasField(field) else None


# ------------------------------------------------------------------ events


def event_to_proto(event: Mapping[str, Any]) -> pb.Event:
    fields = struct_pb2.Struct()
    raw = event.get("fields") or {}
    if raw:
        fields.update(_jsonable(raw))
    return pb.Event(
        seq=_uint(event.get("seq")),
        ts=_opt_float(event.get("ts")) or 0.0,
        kind=_str(event.get("kind")),
        subject=_str(event.get("subject")),
        message=_str(event.get("message")),
        fields=fields,
    )


def event_from_proto(msg: pb.Event) -> dict[str, Any]:
    return {
        "seq": int(msg.seq),
        "ts": msg.ts,
        "kind": msg.kind,
        "subject": msg.subject,
        "message": msg.message,
        "fields": _unfloat(json_format.MessageToDict(msg.fields)),
    }


# ------------------------------------------------------------------ status


def _node_to_proto(node: Mapping[str, Any]) -> pb.Node:
    msg = pb.Node(
        name=_str(node.get("name")),
        raft_address=_str(node.get("raft_address")),
        api_address=_str(node.get("api_address")),
        router_address=_str(node.get("router_address")),
    )
    reachable = node.get("reachable")
    if reachable is not None:
        msg.reachable = bool(reachable)
    msg.lost = bool(node.get("lost"))
    msg.protocol = _uint(node.get("protocol"))
    return msg


def _consensus_to_proto(c: Mapping[str, Any]) -> pb.Consensus:
    return pb.Consensus(
        healthy=bool(c.get("healthy")),
        problem=_str(c.get("problem")),
        halted=_str(c.get("halted")),
        term=_uint(c.get("term")),
        leader_term=_uint(c.get("leader_term")),
        protocol=_uint(c.get("protocol")),
        cluster_version=_uint(c.get("cluster_version")),
        state_digest=_str(c.get("state_digest")),
        lost_nodes=[str(n) for n in c.get("lost_nodes") or []],
    )


def _consensus_from_proto(c: pb.Consensus) -> dict[str, Any]:
    return {
        "healthy": c.healthy,
        "problem": c.problem or None,
        "halted": c.halted or None,
        "term": int(c.term),
        "leader_term": int(c.leader_term),
        "protocol": int(c.protocol),
        "cluster_version": int(c.cluster_version),
        "state_digest": c.state_digest,
        "lost_nodes": list(c.lost_nodes),
    }


def _replica_to_proto(r: Mapping[str, Any]) -> pb.Replica:
    breaker = r.get("breaker") or {}
    msg = pb.Replica(
        name=_str(r.get("name")),
        node=_str(r.get("node")),
        model=_str(r.get("model")),
        url=_str(r.get("url")),
        engine=_str(r.get("engine")),
        role=_str(r.get("role")),
        admin=_str(r.get("admin")),
        health=_str(r.get("health")),
        health_level=int(r.get("health_level") or 0),
        weight=_opt_float(r.get("weight")) or 0.0,
        reason=_str(r.get("reason")),
        breaker_state=_str(breaker.get("state") or "closed"),
        breaker_failure_class=_str(breaker.get("last_failure_class")),
        inflight=_uint(r.get("inflight")),
    )
    process = r.get("process")
    if isinstance(process, Mapping):
        msg.process = _str(process.get("observed"))
        msg.desired = _str(process.get("desired"))
    for field in (
        "gpu_mem",
        "kv_usage",
        "queue_depth",
        "latency_ms",
        "ttft_ms",
        "tpot_ms",
        "gpu_growth",
    ):
        value = _opt_float(r.get(field))
        if value is not None:
            setattr(msg, field, value)
    open_until = _opt_float(breaker.get("open_until"))
    if open_until is not None:
        msg.breaker_open_until = open_until
    return msg


def status_to_proto(doc: Mapping[str, Any]) -> pb.Status:
    freshness = doc.get("freshness")
    leader = doc.get("leader")
    if leader is None and freshness:
        leader = freshness.get("leader")
    msg = pb.Status(
        node=_str(doc.get("node")),
        leader=_str(leader),
        nodes=[_node_to_proto(n) for n in doc.get("nodes") or []],
        replicas=[_replica_to_proto(r) for r in doc.get("replicas") or []],
        recent_events=[event_to_proto(e) for e in doc.get("events") or []],
        version=_uint(doc.get("version")),
        models=[
            pb.ModelRoute(
                model=str(m), replicas_serving=_uint((info or {}).get("replicas_serving"))
            )
            for m, info in sorted((doc.get("models") or {}).items())
        ],
    )
    if freshness:
        msg.freshness.CopyFrom(
            pb.Freshness(
                has_quorum=bool(freshness.get("has_quorum")),
                last_applied_age_s=_opt_float(freshness.get("last_applied_age_s")) or 0.0,
                commit_index=_uint(freshness.get("commit_index")),
            )
        )
    consensus = doc.get("consensus")
    if consensus:
        msg.consensus.CopyFrom(_consensus_to_proto(consensus))
    return msg


def _replica_from_proto(r: pb.Replica) -> dict[str, Any]:
    return {
        "name": r.name,
        "node": r.node,
        "model": r.model,
        "url": r.url,
        "engine": r.engine,
        "role": r.role,
        "admin": r.admin,
        "health": r.health,
        "health_level": r.health_level,
        "weight": r.weight,
        "gpu_mem": _optional(r, "gpu_mem"),
        "kv_usage": _optional(r, "kv_usage"),
        "queue_depth": _optional(r, "queue_depth"),
        "latency_ms": _optional(r, "latency_ms"),
        "ttft_ms": _optional(r, "ttft_ms"),
        "tpot_ms": _optional(r, "tpot_ms"),
        "gpu_growth": _optional(r, "gpu_growth"),
        "reason": r.reason,
        "breaker": {
            "state": r.breaker_state or "closed",
            "open_until": _optional(r, "breaker_open_until"),
            "last_failure_class": r.breaker_failure_class or None,
        },
        "inflight": r.inflight,
        **({"process": {"observed": r.process, "desired": r.desired}} if r.process else {}),
    }


def status_from_proto(msg: pb.Status) -> dict[str, Any]:
    freshness = None
    if msg.HasField("freshness"):
        freshness = {
            "has_quorum": msg.freshness.has_quorum,
            "last_applied_age_s": msg.freshness.last_applied_age_s,
            "commit_index": int(msg.freshness.commit_index),
        }
    return {
        "node": msg.node,
        "leader": msg.leader or None,
        "nodes": [
            {
                "name": n.name,
                "raft_address": n.raft_address,
                "api_address": n.api_address,
                "router_address": n.router_address,
                "reachable": _optional(n, "reachable"),
                "lost": n.lost,
                "protocol": int(n.protocol),
            }
            for n in msg.nodes
        ],
        "replicas": [_replica_from_proto(r) for r in msg.replicas],
        "freshness": freshness,
        "version": int(msg.version),
        "models": {m.model: {"replicas_serving": m.replicas_serving} for m in msg.models},
        "events": [event_from_proto(e) for e in msg.recent_events],
        "consensus": _consensus_from_proto(msg.consensus) if msg.HasField("consensus") else None,
    }


# ------------------------------------------------------------------ breakers, members


def breaker_to_proto(b: Mapping[str, Any]) -> pb.Breaker:
    msg = pb.Breaker(
        replica=_str(b.get("replica")),
        failure_class=_str(b.get("failure_class")),
        state=_str(b.get("state")),
        source=_str(b.get("source")),
        node=_str(b.get("node")),
    )
    until = _opt_float(b.get("until"))
    if until is not None:
        msg.until = until
    return msg


def breaker_from_proto(msg: pb.Breaker) -> dict[str, Any]:
    return {
        "replica": msg.replica,
        "failure_class": msg.failure_class or None,
        "state": msg.state,
        "until": _optional(msg, "until"),
        "source": msg.source,
        "node": msg.node,
    }


def member_to_proto(m: Mapping[str, Any]) -> pb.Member:
    return pb.Member(
        address=_str(m.get("address")),
        node=_str(m.get("node")),
        is_self=bool(m.get("self")),
        is_leader=bool(m.get("leader")),
        connected=bool(m.get("connected")),
    )


def member_from_proto(msg: pb.Member) -> dict[str, Any]:
    return {
        "address": msg.address,
        "node": msg.node,
        "self": msg.is_self,
        "leader": msg.is_leader,
        "connected": msg.connected,
    }


# ------------------------------------------------------------------ incidents


def incident_to_proto(inc: Mapping[str, Any]) -> pb.Incident:
    msg = pb.Incident(
        id=_str(inc.get("id")),
        model=_str(inc.get("model")),
        replica=_str(inc.get("replica")),
        open=bool(inc.get("open")),
        detected=_opt_float(inc.get("detected")) or 0.0,
        timeline=[
            pb.IncidentStep(
                ts=_opt_float(s.get("ts")) or 0.0,
                what=_str(s.get("what")),
                message=_str(s.get("message")),
            )
            for s in inc.get("timeline") or ()
        ],
    )
    for key in ("restored", "closed", "mttr_s", "duration_s"):
        value = _opt_float(inc.get(key))
        if value is not None:
            setattr(msg, key, value)
    return msg


def incident_from_proto(msg: pb.Incident) -> dict[str, Any]:
    return {
        "id": msg.id,
        "model": msg.model,
        "replica": msg.replica,
        "open": msg.open,
        "detected": msg.detected,
        "restored": _optional(msg, "restored"),
        "closed": _optional(msg, "closed"),
        "mttr_s": _optional(msg, "mttr_s"),
        "duration_s": _optional(msg, "duration_s"),
        "timeline": [{"ts": s.ts, "what": s.what, "message": s.message} for s in msg.timeline],
    }


# ------------------------------------------------------------------ rolling reloads


def rollout_to_proto(ro: Mapping[str, Any]) -> pb.Rollout:
    msg = pb.Rollout(
        id=_str(ro.get("id")),
        model=_str(ro.get("model")),
        state=_str(ro.get("state")),
        waiting=_str(ro.get("waiting")),
        reason=_str(ro.get("reason")),
        by=_str(ro.get("by")),
        surge_replica=_str(ro.get("surge_replica")),
        surge_state=_str(ro.get("surge_state")),
        max_unavailable=max(0, int(ro.get("max_unavailable") or 0)),
        drain_timeout_s=_opt_float(ro.get("drain_timeout_s")) or 0.0,
        started=_opt_float(ro.get("started")) or 0.0,
        serving=max(0, int(ro.get("serving") or 0)),
    )
    for key in ("finished", "duration_s"):
        value = _opt_float(ro.get(key))
        if value is not None:
            setattr(msg, key, value)
    for rep in ro.get("replicas") or ():
        item = pb.RolloutReplica(
            name=_str(rep.get("name")),
            step=_str(rep.get("step")),
            reason=_str(rep.get("reason")),
            inflight=max(0, int(rep.get("inflight") or 0)),
            serving=bool(rep.get("serving")),
        )
        value = _opt_float(rep.get("unavailable_s"))
        if value is not None:
            item.unavailable_s = value
        msg.replicas.append(item)
    return msg


def rollout_from_proto(msg: pb.Rollout) -> dict[str, Any]:
    return {
        "id": msg.id,
        "model": msg.model,
        "state": msg.state,
        "waiting": msg.waiting,
        "reason": msg.reason,
        "by": msg.by,
        "surge_replica": msg.surge_replica,
        "surge_state": msg.surge_state,
        "max_unavailable": msg.max_unavailable,
        "drain_timeout_s": msg.drain_timeout_s,
        "started": msg.started,
        "finished": _optional(msg, "finished"),
        "duration_s": _optional(msg, "duration_s"),
        "serving": msg.serving,
        "replicas": [
            {
                "name": r.name,
                "step": r.step,
                "reason": r.reason,
                "inflight": r.inflight,
                "unavailable_s": _optional(r, "unavailable_s"),
                "serving": r.serving,
            }
            for r in msg.replicas
        ],
    }
