"""The cluster's state machine: the commands that change the replicated document.

:func:`apply` is deterministic, reads no clock and does no I/O, and is idempotent (applying a
command twice leaves the same state), because a consensus timeout is an unknown outcome and the
caller may repeat the command. Commands carry the writer's wall-clock ``ts`` for event records
only; nothing compares it with another host's clock.

Fencing: a new leader first writes ``claim_leader`` with its Raft term; every leader decision
(weights, planned role changes, leases, breaker expiry) carries that term and is refused unless
it matches the recorded claim, so a deposed leader's late writes never apply.
"""

from __future__ import annotations

from typing import Any

import orjson

from hanode.cluster.document import (
    MAX_EVENTS,
    MAX_INCIDENTS,
    MAX_TIMELINE,
    OBS_FIELDS,
    PROTOCOL,
    Command,
    Doc,
    command_protocol,
)
from hanode.pool.lifecycle import Desired, Observed
from hanode.pool.replica import AdminState, HealthLevel, Role


class CommandError(ValueError):
    """A command that cannot apply (unknown replica, bad shape). The state is unchanged, and
    every node with the same code agrees on that."""


class Fenced(CommandError):
    """A leader decision from a leader that is no longer the one the cluster follows."""


class IncompatibleCommand(Exception):
    """A command this code does not know how to apply (written by a newer protocol): applying
    the rest of the log without it would diverge from the nodes that can."""


# -- the state machine ------------------------------------------------------------------------
def apply(doc: Doc, cmd: Command, protocol: int = PROTOCOL) -> Any:
    """Apply ``cmd`` to ``doc`` in place; returns the command's result. Raises CommandError
    (state unchanged) or IncompatibleCommand (``cmd`` needs more than ``protocol``)."""
    op = cmd.get("op")
    if not isinstance(op, str):
        raise CommandError(f"command without an op: {op!r}")
    needed = command_protocol(cmd)
    handler = _HANDLERS.get(op)
    if handler is None or needed > protocol:
        shown = "unknown" if needed == float("inf") else f"protocol {int(needed)}"
        raise IncompatibleCommand(
            f"command {op!r} needs {shown}; this node speaks protocol {protocol}"
        )
    snapshot = orjson.dumps(doc)  # a handler may fail half-way: put everything back then
    try:
        result = handler(doc, cmd)
        if needed > int(doc.get("protocol_high", 1)):
            # The state now holds what older code cannot read: a node loading it from a dump
            # (not from the log) must know, see raft_store._deserialize.
            doc["protocol_high"] = int(needed)
        return result
    except CommandError:
        _restore(doc, snapshot)
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        _restore(doc, snapshot)
        raise CommandError(f"malformed {op!r} command: {type(exc).__name__}: {exc}") from None


def _restore(doc: Doc, snapshot: bytes) -> None:
    """Make ``doc`` (in place: callers hold it) what it was before a refused command."""
    doc.clear()
    doc.update(orjson.loads(snapshot))


def _fence(doc: Doc, cmd: Command, *, required: bool) -> None:
    """Refuse a leader decision unless it comes from the leader whose claim is recorded."""
    if "term" not in cmd:
        if required:
            raise Fenced(f"{cmd.get('op')!r} is a leader decision and needs a term")
        return
    leader = doc.get("leader") or {}
    want = (str(leader.get("node", "")), int(leader.get("term", 0)))
    got = (str(cmd.get("leader", "")), int(cmd["term"]))
    if got != want:
        raise Fenced(
            f"fenced: {cmd.get('op')!r} from {got[0] or '?'} (term {got[1]}), but the cluster "
            f"follows {want[0] or 'no leader'} (term {want[1]})"
        )


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
    info: dict[str, Any] = {k: str(cmd.get(k, "")) for k in ("raft", "api", "router", "ops")}
    info["protocol"] = int(cmd.get("protocol", 1))
    known = doc["nodes"].get(name)
    if known is not None and known.get("lost"):
        info["lost"] = True  # only the leader's lease says when it is back
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
    for key in (*OBS_FIELDS, "gpu_removed", "reason"):
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
    _fence(doc, cmd, required=False)
    rec = _replica(doc, cmd["replica"])
    role = Role(cmd["role"]).value
    if rec["role"] == role:
        return False
    rec["role"] = role
    rec["promoted"] = bool(cmd.get("planned", False)) and role == Role.ACTIVE.value
    # A new role brings its own process state (active: run; standby: its standby mode). Only
    # protocol-3 states hold these keys, so older nodes, which never have them, agree.
    rec.pop("desired", None)
    rec.pop("desired_by", None)
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
    _fence(doc, cmd, required=False)
    weights = {str(k): float(v) for k, v in cmd["weights"].items() if k in doc["replicas"]}
    doc["weights"] = weights


def _open_breaker(doc: Doc, cmd: Command) -> bool:
    """Record a breaker some router opened, for ``open_s`` seconds from when each router
    applies it (a duration: hosts' clocks are not compared). Keyed by the open's ``id``, so a
    repeated command changes nothing; a new open of the same replica replaces the record."""
    name = str(cmd["replica"])
    _replica(doc, name)
    open_s = float(cmd["open_s"])
    if not 0.0 < open_s < 86400.0:
        raise CommandError(f"open_s must be in (0, 86400), got {open_s!r}")
    current = doc["breakers"].get(name)
    if current is not None and current["id"] == str(cmd["id"]):
        return False
    doc["breakers"][name] = {
        "failure_class": str(cmd["failure_class"]),
        "open_s": open_s,
        "node": str(cmd.get("node", "")),
        "id": str(cmd["id"]),
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


def _expire_breakers(doc: Doc, cmd: Command) -> list[str]:
    """The leader's verdict that these opens are over (it times them on its own clock)."""
    _fence(doc, cmd, required=True)
    ids: dict[str, Any] = dict(cmd["ids"])
    gone = [n for n, b in doc["breakers"].items() if ids.get(n) == b["id"]]
    for name in gone:
        del doc["breakers"][name]
    return gone


def _claim_leader(doc: Doc, cmd: Command) -> bool:
    """A new leader's first write: the term its later decisions are fenced with."""
    node, term = str(cmd["node"]), int(cmd["term"])
    leader = doc.setdefault("leader", {"node": "", "term": 0})
    if (leader["node"], int(leader["term"])) == (node, term):
        return False
    if term <= int(leader["term"]):
        raise Fenced(
            f"stale leader claim: {node} (term {term}), the cluster follows "
            f"{leader['node'] or 'no leader'} (term {leader['term']})"
        )
    doc["leader"] = {"node": node, "term": term}
    _event(doc, float(cmd["ts"]), "leader", node, f"{node} is the leader", term=term)
    return True


def _node_lost(doc: Doc, cmd: Command) -> list[str]:
    """The leader has not heard from a node for a lease: its replicas leave routing everywhere
    (observed DOWN) until the node itself reports them again."""
    _fence(doc, cmd, required=True)
    name = str(cmd["name"])
    node = doc["nodes"].get(name)
    if node is None:
        raise CommandError(f"unknown node {name!r}")
    if node.get("lost"):
        return []
    node["lost"] = True
    ts = float(cmd["ts"])
    silent = float(cmd.get("silent_s", 0.0))
    gone = sorted(n for n, r in doc["replicas"].items() if r["spec"].get("node") == name)
    for replica in gone:
        rec = doc["replicas"][replica]
        rec["obs"] = {"level": int(HealthLevel.DOWN), "reason": f"node {name} lost"}
        rec["obs_ts"] = ts
    _event(
        doc,
        ts,
        "membership",
        name,
        f"node lost: {cmd.get('leader', '?')} has not heard from it for {silent:.1f}s",
        replicas=gone,
    )
    return gone


def _node_back(doc: Doc, cmd: Command) -> bool:
    _fence(doc, cmd, required=True)
    name = str(cmd["name"])
    node = doc["nodes"].get(name)
    if node is None:
        raise CommandError(f"unknown node {name!r}")
    if not node.get("lost"):
        return False
    node["lost"] = False
    _event(doc, float(cmd["ts"]), "membership", name, "node back")
    return True


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


def _checkpoint(doc: Doc, cmd: Command) -> bool:
    """The leader marks a point in the log; every node then reports the digest of its own
    state right after applying it, so a node whose state diverged can tell (see runtime)."""
    _fence(doc, cmd, required=True)
    cid = str(cmd["id"])
    current = doc.get("checkpoint")
    if current is not None and current.get("id") == cid:
        return False
    doc["checkpoint"] = {"id": cid, "reports": {}}
    return True


def _checkpoint_report(doc: Doc, cmd: Command) -> bool:
    """One node's digest at the current checkpoint (reports for an older one are dropped)."""
    current = doc.get("checkpoint")
    if current is None or current.get("id") != str(cmd["id"]):
        return False
    digest = str(cmd["digest"])
    if not 0 < len(digest) <= 64:
        raise CommandError("a checkpoint digest is 1 to 64 characters")
    current["reports"][str(cmd["node"])] = digest
    return True


# -- recovery (protocol 3) ---------------------------------------------------------------------
def _text(value: Any, limit: int = 200) -> str:
    return str(value)[:limit]


def _set_desired(doc: Doc, cmd: Command) -> bool:
    """What a replica's process should be (run, sleep, stop). The planner's word never
    overrides an operator's (``hanodectl sleep``/``wake``) until the replica's role changes,
    whatever order the two commands reach the log in."""
    _fence(doc, cmd, required=False)
    name = str(cmd["replica"])
    rec = _replica(doc, name)
    desired = Desired(cmd["desired"]).value
    by = _text(cmd.get("by", ""), 40)
    if by == "planner" and rec.get("desired_by") == "operator":
        return False
    if rec.get("desired") == desired and rec.get("desired_by") == by:
        return False
    rec["desired"] = desired
    rec["desired_by"] = by
    _event(
        doc,
        float(cmd["ts"]),
        "process",
        name,
        f"desired {desired} by {by or '?'}" + (f": {cmd['reason']}" if cmd.get("reason") else ""),
        desired=desired,
        by=by,
    )
    return True


def _request_restart(doc: Doc, cmd: Command) -> int:
    """Ask the replica's node to restart it (and clear a crash loop). ``gen`` is the number of
    this request: repeating the same command changes nothing."""
    name = str(cmd["replica"])
    rec = _replica(doc, name)
    gen = int(cmd["gen"])
    if not 0 < gen < 2**31:
        raise CommandError(f"restart gen must be in (0, 2**31), got {gen}")
    current = int(rec.get("restart_gen", 0))
    if gen <= current:
        return current
    rec["restart_gen"] = gen
    _event(
        doc,
        float(cmd["ts"]),
        "restart",
        name,
        f"restart requested by {cmd.get('by', '?')}",
        gen=gen,
    )
    return gen


def _report_process(doc: Doc, cmd: Command) -> bool:
    """What a replica's own node last saw of its process, and the last restart request it
    carried out."""
    name = str(cmd["replica"])
    rec = _replica(doc, name)
    node = str(cmd["node"])
    if node != str(rec["spec"].get("node", "")):
        raise CommandError(f"{node!r} does not run replica {name!r}")
    proc = {
        "state": Observed(cmd["state"]).value,
        "restart_done": int(cmd.get("restart_done", 0)),
        "detail": _text(cmd.get("detail", "")),
    }
    if rec.get("proc") == proc:
        return False
    rec["proc"] = proc
    return True


def _open_incident(doc: Doc, cmd: Command) -> str:
    """The leader saw an active replica lost: one open incident per replica at a time, so a
    repeated command returns the incident already open."""
    _fence(doc, cmd, required=True)
    name = str(cmd["replica"])
    _replica(doc, name)
    incidents: list[dict[str, Any]] = doc.setdefault("incidents", [])
    for inc in incidents:
        if inc["replica"] == name and inc.get("closed") is None:
            return str(inc["id"])
    seq = int(doc.get("incident_seq", 0)) + 1
    doc["incident_seq"] = seq
    ts = float(cmd["ts"])
    reason = _text(cmd.get("reason", ""))
    inc = {
        "id": f"{name}#{seq}",
        "model": str(cmd["model"]),
        "replica": name,
        "want": min(max(1, int(cmd.get("want", 1))), 10_000),
        "detected": ts,
        "restored": None,
        "closed": None,
        "mttr_s": None,
        "duration_s": None,
        "timeline": [{"ts": ts, "what": "detected", "message": reason, "key": "detected"}],
    }
    for step in list(cmd.get("steps", []))[: MAX_TIMELINE - 1]:  # what was done at once
        inc["timeline"].append(
            {
                "ts": ts,
                "what": _text(step.get("what", "action"), 40),
                "message": _text(step.get("message", "")),
                "key": _text(step["key"], 80),
            }
        )
    incidents.append(inc)
    if len(incidents) > MAX_INCIDENTS:
        del incidents[: len(incidents) - MAX_INCIDENTS]
    _event(doc, ts, "incident", name, f"incident {inc['id']} opened: {reason}", id=inc["id"])
    return str(inc["id"])


def _note_incident(doc: Doc, cmd: Command) -> bool:
    """One step of an incident's timeline (keyed: a repeated note changes nothing); it may
    mark capacity restored (the MTTR ends) or the incident closed (the original is back)."""
    _fence(doc, cmd, required=True)
    wanted = str(cmd["id"])
    inc = next((i for i in doc.get("incidents", []) if i["id"] == wanted), None)
    if inc is None or inc.get("closed") is not None:
        return False
    key = _text(cmd["key"], 80)
    timeline: list[dict[str, Any]] = inc["timeline"]
    if any(step["key"] == key for step in timeline):
        return False
    ts = float(cmd["ts"])
    restored = bool(cmd.get("restored")) or bool(cmd.get("closed"))
    closed = bool(cmd.get("closed"))
    if len(timeline) < MAX_TIMELINE or restored:
        timeline.append(
            {
                "ts": ts,
                "what": _text(cmd.get("what", "note"), 40),
                "message": _text(cmd.get("message", "")),
                "key": key,
            }
        )
    if restored and inc.get("restored") is None:
        inc["restored"] = ts
        inc["mttr_s"] = round(max(0.0, ts - float(inc["detected"])), 3)
        _event(
            doc,
            ts,
            "incident",
            str(inc["replica"]),
            f"incident {inc['id']}: capacity restored after {inc['mttr_s']:g}s",
            id=inc["id"],
            mttr_s=inc["mttr_s"],
        )
    if closed:
        inc["closed"] = ts
        inc["duration_s"] = round(max(0.0, ts - float(inc["detected"])), 3)
        _event(
            doc,
            ts,
            "incident",
            str(inc["replica"]),
            f"incident {inc['id']} closed after {inc['duration_s']:g}s",
            id=inc["id"],
            duration_s=inc["duration_s"],
        )
    return True


# -- rolling reloads (protocol 4) -------------------------------------------------------------
# A replica's steps, in order; "failed" may follow any of them. See ``cluster/rollout.py``.
ROLLOUT_STEPS = ("waiting", "draining", "reloading", "warming", "ramping", "done")
ROLLOUT_STATES = ("running", "done", "failed", "aborted")
MAX_ROLLOUT_REPLICAS = 64


def _rollout(doc: Doc, cmd: Command, running: bool = True) -> dict[str, Any] | None:
    """The model's rollout this command is about (its ``id`` must match), or None when the
    command is late (another rollout, or this one already over: nothing to do)."""
    ro = doc.get("rollouts", {}).get(str(cmd["model"]))
    if ro is None or ro["id"] != str(cmd["id"]):
        return None
    if running and ro["state"] != "running":
        return None
    rollout: dict[str, Any] = ro
    return rollout


def _restore_admin(doc: Doc, ro: dict[str, Any], ts: float, why: str) -> None:
    """Enable again every replica this rollout drained (an operator's own drains stay)."""
    for name, step in ro["replicas"].items():
        if step.get("drained"):
            step["drained"] = False
            rec = doc["replicas"].get(name)
            if rec is not None and rec["admin"] != AdminState.ENABLED.value:
                rec["admin"] = AdminState.ENABLED.value
                _event(doc, ts, "admin", name, f"enabled by the rollout ({why})")
            if step.get("down_at") is not None and step.get("unavailable_s") is None:
                step["unavailable_s"] = round(max(0.0, ts - float(step["down_at"])), 3)


def _start_rollout(doc: Doc, cmd: Command) -> bool:
    """An operator's ``hanodectl reload MODEL``: the replicas in the order they will reload.
    One running rollout per model; the same ``id`` again changes nothing."""
    model = _text(cmd["model"])
    rid = _text(cmd["id"], 40)
    rollouts = doc.setdefault("rollouts", {})
    current = rollouts.get(model)
    if current is not None and current["id"] == rid:
        return False
    if current is not None and current["state"] == "running":
        raise CommandError(f"a rollout of {model} is already running ({current['id']})")
    names = [str(n) for n in cmd["replicas"]]
    if not names or len(names) > MAX_ROLLOUT_REPLICAS or len(set(names)) != len(names):
        raise CommandError(f"a rollout needs 1 to {MAX_ROLLOUT_REPLICAS} distinct replicas")
    for name in names:
        if _replica(doc, name)["spec"]["model"] != model:
            raise CommandError(f"replica {name!r} does not serve {model}")
    surge = str(cmd.get("surge_replica", ""))
    if surge and surge not in names:
        raise CommandError(f"the surge replica {surge!r} is not part of the rollout")
    max_unavailable = int(cmd.get("max_unavailable", 1))
    drain_timeout_s = float(cmd.get("drain_timeout_s", 60.0))
    if not 1 <= max_unavailable <= MAX_ROLLOUT_REPLICAS:
        raise CommandError("max_unavailable must be at least 1")
    if not 0.0 <= drain_timeout_s <= 86400.0:
        raise CommandError("drain_timeout_s must be in [0, 86400]")
    ts = float(cmd["ts"])
    rollouts[model] = {
        "id": rid,
        "model": model,
        "state": "running",
        "by": _text(cmd.get("by", ""), 40),
        "max_unavailable": max_unavailable,
        "surge": bool(cmd.get("surge", False)),
        "surge_replica": surge,
        "surge_state": "",
        "drain_timeout_s": drain_timeout_s,
        "started": ts,
        "finished": None,
        "reason": "",
        "waiting": "",
        "order": names,
        "replicas": {
            n: {"step": "waiting", "gen": 0, "drained": False, "inflight": {}, "reason": ""}
            for n in names
        },
    }
    _event(
        doc,
        ts,
        "rollout",
        model,
        f"rollout {rid} of {model} started by {cmd.get('by', '?')}: {', '.join(names)}"
        + (f" (surge with {surge})" if surge else ""),
        id=rid,
        replicas=names,
    )
    return True


def _rollout_step(doc: Doc, cmd: Command) -> bool:
    """The leader moves one replica of the rollout to its next step (forward only; a step
    written again changes nothing). Draining takes the replica out of routing everywhere;
    reloading asks its node for the restart (a new restart generation) or the engine reload;
    ramping and failed put it back into routing."""
    _fence(doc, cmd, required=True)
    ro = _rollout(doc, cmd)
    if ro is None:
        return False
    name = str(cmd["replica"])
    step = ro["replicas"].get(name)
    if step is None:
        raise CommandError(f"replica {name!r} is not part of rollout {ro['id']}")
    new = str(cmd["step"])
    if new != "failed" and new not in ROLLOUT_STEPS:
        raise CommandError(f"unknown rollout step {new!r}")
    old = str(step["step"])
    if old in ("done", "failed") or (
        new != "failed" and ROLLOUT_STEPS.index(new) <= ROLLOUT_STEPS.index(old)
    ):
        return False
    rec = _replica(doc, name)
    ts = float(cmd["ts"])
    if new == "draining":
        step["inflight"] = {}
        if rec["admin"] == AdminState.ENABLED.value:
            rec["admin"] = AdminState.DRAINED.value
            step["drained"] = True
            step["down_at"] = ts
    if new == "reloading":
        gen = int(cmd["gen"])
        if not 0 < gen < 2**31:
            raise CommandError(f"reload gen must be in (0, 2**31), got {gen}")
        step["gen"] = gen
        if rec["role"] == "active":  # out of service from now (a standby serves nobody)
            step.setdefault("down_at", ts)
        key = "reload_gen" if cmd.get("how") == "engine" else "restart_gen"
        step["how"] = "engine" if key == "reload_gen" else "restart"
        rec[key] = max(int(rec.get(key, 0)), gen)
    if new in ("ramping", "done", "failed") and step.get("drained"):
        step["drained"] = False
        rec["admin"] = AdminState.ENABLED.value
    if new in ("ramping", "done", "failed") and step.get("down_at") is not None:
        step.setdefault("unavailable_s", round(max(0.0, ts - float(step["down_at"])), 3))
    step["step"] = new
    step["since"] = ts
    step["reason"] = _text(cmd.get("reason", ""))
    _event(
        doc,
        ts,
        "rollout",
        name,
        f"rollout {ro['id']}: {name} {old} -> {new}"
        + (f": {step['reason']}" if step["reason"] else ""),
        id=ro["id"],
        step=new,
    )
    return True


def _rollout_note(doc: Doc, cmd: Command) -> bool:
    """The leader's word on why the rollout waits, or on its surge standby."""
    _fence(doc, cmd, required=True)
    ro = _rollout(doc, cmd, running=False)
    if ro is None:
        return False
    changed = False
    if "waiting" in cmd and ro["waiting"] != _text(cmd["waiting"]):
        ro["waiting"] = _text(cmd["waiting"])
        changed = True
    if "surge_state" in cmd:
        state = str(cmd["surge_state"])
        if state not in ("", "woken", "promoted", "released"):
            raise CommandError(f"unknown surge state {state!r}")
        if ro["surge_state"] != state:
            ro["surge_state"] = state
            changed = True
            _event(
                doc,
                float(cmd["ts"]),
                "rollout",
                ro["surge_replica"],
                f"rollout {ro['id']}: surge standby {ro['surge_replica']} {state}",
                id=ro["id"],
            )
    return changed


def _finish_rollout(doc: Doc, cmd: Command) -> bool:
    """The leader ends the rollout (done, or failed with the reason); every replica it
    drained is enabled again."""
    _fence(doc, cmd, required=True)
    ro = _rollout(doc, cmd)
    if ro is None:
        return False
    state = str(cmd["state"])
    if state not in ("done", "failed"):
        raise CommandError(f"a rollout finishes done or failed, not {state!r}")
    return _end(doc, ro, state, _text(cmd.get("reason", "")), float(cmd["ts"]))


def _end(doc: Doc, ro: dict[str, Any], state: str, reason: str, ts: float) -> bool:
    _restore_admin(doc, ro, ts, state)
    ro["state"] = state
    ro["reason"] = reason
    ro["finished"] = ts
    ro["waiting"] = ""
    duration = round(max(0.0, ts - float(ro["started"])), 3)
    ro["duration_s"] = duration
    _event(
        doc,
        ts,
        "rollout",
        str(ro["model"]),
        f"rollout {ro['id']} of {ro['model']} {state} after {duration:g}s"
        + (f": {reason}" if reason else ""),
        id=ro["id"],
        state=state,
        duration_s=duration,
    )
    return True


def _abort_rollout(doc: Doc, cmd: Command) -> bool:
    """An operator's ``hanodectl reload --abort MODEL``: the rollout stops at once and every
    replica it drained is enabled again (one mid-reload serves once it passes L2)."""
    model = str(cmd["model"])
    ro = doc.get("rollouts", {}).get(model)
    if ro is None or ro["state"] != "running":
        return False
    if cmd.get("id") and str(cmd["id"]) != ro["id"]:
        return False
    by = _text(cmd.get("by", "?"), 40)
    return _end(doc, ro, "aborted", f"aborted by {by}", float(cmd["ts"]))


def _report_inflight(doc: Doc, cmd: Command) -> bool:
    """A node's router's count of requests still in flight on a draining replica."""
    ro = _rollout(doc, cmd)
    if ro is None:
        return False
    step = ro["replicas"].get(str(cmd["replica"]))
    node = str(cmd["node"])
    if step is None or step["step"] != "draining" or node not in doc["nodes"]:
        return False
    count = int(cmd["inflight"])
    if not 0 <= count < 2**31:
        raise CommandError(f"inflight must be in [0, 2**31), got {count}")
    if step["inflight"].get(node) == count:
        return False
    step["inflight"][node] = count
    return True


def _report_reload(doc: Doc, cmd: Command) -> bool:
    """The replica's own node carried out the engine reload of this generation."""
    name = str(cmd["replica"])
    rec = _replica(doc, name)
    if str(cmd["node"]) != str(rec["spec"].get("node", "")):
        raise CommandError(f"{cmd['node']!r} does not run replica {name!r}")
    done = int(cmd["done"])
    if done <= int(rec.get("reload_done", 0)):
        return False
    rec["reload_done"] = done
    _event(doc, float(cmd["ts"]), "process", name, f"engine reload {done} done", gen=done)
    return True


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
    "claim_leader": _claim_leader,
    "node_lost": _node_lost,
    "node_back": _node_back,
    "checkpoint": _checkpoint,
    "checkpoint_report": _checkpoint_report,
    "set_desired": _set_desired,
    "request_restart": _request_restart,
    "report_process": _report_process,
    "open_incident": _open_incident,
    "note_incident": _note_incident,
    "start_rollout": _start_rollout,
    "rollout_step": _rollout_step,
    "rollout_note": _rollout_note,
    "finish_rollout": _finish_rollout,
    "abort_rollout": _abort_rollout,
    "report_inflight": _report_inflight,
    "report_reload": _report_reload,
}
