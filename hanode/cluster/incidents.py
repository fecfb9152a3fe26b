"""Incidents: each loss of an active replica, with its timeline (pure).

The leader runs :func:`plan_incidents` each round after its other decisions. An incident opens
when an active, enabled replica that should run and that served before stops being able to
serve (a replica asleep, stopped or drained on purpose is expected-down: no incident; one
still loading after a start on purpose has not served yet: no incident either). What served is
the leader's memory; a new leader starts from what serves when it takes over.

The timeline records what was done (the node restarting it, the planner waking or promoting a
standby), when capacity was restored (the model has as many serving replicas as before the
loss: the MTTR ends) and when the original was back (the incident closes). Each step is a
fenced, keyed command, so a repeated one changes nothing, and its time is the leader's wall
clock when it wrote it.
"""

from __future__ import annotations

from collections.abc import Sequence

from hanode.cluster.document import Command
from hanode.cluster.view import ClusterView, IncidentRecord, ReplicaRecord
from hanode.pool.lifecycle import Desired, Observed
from hanode.pool.replica import AdminState, Role


def _note(
    inc: IncidentRecord,
    key: str,
    what: str,
    message: str,
    *,
    restored: bool = False,
    closed: bool = False,
) -> Command:
    cmd: Command = {"op": "note_incident", "id": inc.id, "key": key, "what": what}
    cmd["message"] = message
    if restored:
        cmd["restored"] = True
    if closed:
        cmd["closed"] = True
    return cmd


def _lost(rec: ReplicaRecord, lost_nodes: frozenset[str]) -> bool:
    """Counted capacity gone by accident."""
    return (
        rec.role is Role.ACTIVE
        and rec.admin is AdminState.ENABLED
        and not rec.expected_down
        and not rec.may_serve(lost_nodes)
        and (rec.observed_at > 0.0 or rec.spec.node in lost_nodes)
    )


def plan_incidents(
    view: ClusterView, planned: Sequence[Command] = (), served: set[str] | None = None
) -> list[Command]:
    """This round's incident commands; ``planned`` are the leader's other decisions of the
    round (wakes and promotions become steps of the model's open incidents). ``served`` (the
    leader's memory, updated here) holds the replicas seen serving since they were last down
    on purpose; None: every replica counts as having served."""
    lost_nodes = view.lost_nodes
    if served is not None:
        for name, rec in view.replicas.items():
            if rec.expected_down or rec.admin is not AdminState.ENABLED:
                served.discard(name)
            elif rec.role is Role.ACTIVE and rec.may_serve(lost_nodes):
                served.add(name)
        served &= set(view.replicas)
    open_by_replica = {i.replica: i for i in view.incidents if i.open}
    serving: dict[str, list[str]] = {}
    for name, rec in sorted(view.replicas.items()):
        if rec.role is Role.ACTIVE and rec.may_serve(lost_nodes):
            serving.setdefault(rec.spec.model, []).append(name)
    out: list[Command] = []
    newly: dict[str, list[ReplicaRecord]] = {}
    for name, rec in sorted(view.replicas.items()):
        if name in open_by_replica or (served is not None and name not in served):
            continue
        if _lost(rec, lost_nodes):
            newly.setdefault(rec.spec.model, []).append(rec)
    for model, recs in newly.items():
        still = sum(1 for i in open_by_replica.values() if i.model == model)
        want = len(serving.get(model, ())) + still + len(recs)
        for rec in recs:
            steps = [
                {"key": key, "what": "action", "message": message}
                for key, message in _actions(model, rec.spec.name, view, planned)
            ]
            out.append(
                {
                    "op": "open_incident",
                    "replica": rec.spec.name,
                    "model": model,
                    "want": want,
                    "reason": _why(rec, lost_nodes),
                    "steps": steps,
                }
            )
    for inc in open_by_replica.values():
        out += _follow(inc, view, serving.get(inc.model, []), planned)
    return out


def _why(rec: ReplicaRecord, lost_nodes: frozenset[str]) -> str:
    if rec.spec.node in lost_nodes:
        return f"{rec.spec.name} lost with node {rec.spec.node}"
    if rec.process not in (Observed.UNKNOWN, Observed.RUNNING):
        detail = f": {rec.process_detail}" if rec.process_detail else ""
        return f"{rec.spec.name} process {rec.process.value}{detail}"
    obs = rec.observation
    return f"{rec.spec.name} {obs.level.name}" + (f": {obs.reason}" if obs.reason else "")


def _actions(
    model: str, replica: str, view: ClusterView, planned: Sequence[Command]
) -> list[tuple[str, str]]:
    """(key, message) of this round's wakes and promotions that cover ``replica``'s loss."""
    out: list[tuple[str, str]] = []
    for cmd in planned:
        target = view.replicas.get(str(cmd.get("replica")))
        if target is None or target.spec.model != model or target.spec.name == replica:
            continue
        name = target.spec.name
        if cmd.get("op") == "set_desired" and cmd.get("desired") == Desired.RUN.value:
            verb = "woke" if target.desired is Desired.SLEEP else "started"
            out.append((f"wake:{name}", f"{verb} standby {name}"))
        elif cmd.get("op") == "set_role" and cmd.get("role") == Role.ACTIVE.value:
            out.append((f"promote:{name}", f"promoted {name}"))
    return out


def _follow(
    inc: IncidentRecord, view: ClusterView, serving: list[str], planned: Sequence[Command]
) -> list[Command]:
    rec = view.replicas.get(inc.replica)
    if rec is None:
        return [_note(inc, "removed", "closed", f"{inc.replica} left the cluster", closed=True)]
    if rec.admin is not AdminState.ENABLED or rec.role is Role.STANDBY or rec.expected_down:
        why = (
            "drained"
            if rec.admin is not AdminState.ENABLED
            else "demoted"
            if rec.role is Role.STANDBY
            else f"desired {rec.desired.value}"
        )
        return [
            _note(inc, "on-purpose", "closed", f"{inc.replica} {why} by an operator", closed=True)
        ]
    out = [
        _note(inc, key, "action", message)
        for key, message in _actions(inc.model, inc.replica, view, planned)
    ]
    if rec.process in (Observed.BACKOFF, Observed.STARTING) and not inc.has("restart"):
        out.append(_note(inc, "restart", "action", f"node {rec.spec.node} restarts it"))
    if rec.process is Observed.CRASH_LOOP and not inc.has("crash_loop"):
        out.append(
            _note(
                inc,
                "crash_loop",
                "action",
                "crash loop: restarts stopped until `hanodectl restart " + inc.replica + "`",
            )
        )
    others = [n for n in serving if n != inc.replica]
    if inc.restored is None and len(others) >= inc.want:
        out.append(
            _note(
                inc,
                "restored",
                "standby_serving",
                f"{', '.join(others)} serving ({len(others)}/{inc.want})",
                restored=True,
            )
        )
    if inc.replica in serving:
        out.append(
            _note(inc, "original_back", "original_back", f"{inc.replica} serves again", closed=True)
        )
    return out
