"""The leader's process decisions: wake or start a standby when a model is short of capacity,
and put it back to its standby mode when it is no longer needed (pure).

Order of spare capacity: a hot standby (running, ready) is promoted by ``planner.plan_roles``
at once; when there is none, a sleeping standby is woken (seconds), then a stopped one is
started (the engine's load time). A woken standby is promoted by ``plan_roles`` as soon as it
passes L2 like any ready standby. A standby woken by the planner and not promoted goes back
to its standby mode once the model has its ``min_active`` again for ``hold_s``; one that was
promoted goes back when the planner demotes it (a new role brings its standby mode along, see
``state._set_role``). An operator's ``hanodectl sleep``/``wake`` is never overridden.
"""

from __future__ import annotations

from collections.abc import Mapping

from hanode.cluster.document import Command
from hanode.cluster.planner import (
    ModelPolicy,
    PlannerMemory,
    Redundancy,
    could_serve,
    needed_active,
)
from hanode.cluster.view import ClusterView, ReplicaRecord
from hanode.pool.lifecycle import Desired, Observed, desired_for_standby
from hanode.pool.replica import AdminState, Role

# Wake sleeping standbys before starting stopped ones: seconds against the load time.
_WAKE_ORDER = {Desired.SLEEP: 0, Desired.STOP: 1}


def _woken(rec: ReplicaRecord) -> bool:
    """A standby the planner took out of its standby mode."""
    return (
        rec.role is Role.STANDBY
        and rec.actuated
        and rec.desired is Desired.RUN
        and rec.desired_by == "planner"
        and desired_for_standby(rec.standby) is not Desired.RUN
    )


def _set_desired(rec: ReplicaRecord, desired: Desired, reason: str) -> Command:
    return {
        "op": "set_desired",
        "replica": rec.spec.name,
        "desired": desired.value,
        "by": "planner",
        "reason": reason,
    }


def plan_process(
    view: ClusterView,
    policies: Mapping[str, ModelPolicy],
    memory: PlannerMemory,
    now: float,
    hold_s: float,
) -> list[Command]:
    """At most one process change per model per round."""
    out: list[Command] = []
    by_model: dict[str, list[ReplicaRecord]] = {}
    for rec in view.replicas.values():
        by_model.setdefault(rec.spec.model, []).append(rec)
    keep: set[str] = set()
    for model, recs in sorted(by_model.items()):
        policy = policies.get(model, ModelPolicy(model))
        cmd = _plan_model(recs, policy, memory, now, hold_s, view.lost_nodes, keep)
        if cmd is not None:
            out.append(cmd)
    for name in [n for n in memory.rest_since if n not in keep]:
        del memory.rest_since[name]
    return out


def _plan_model(
    recs: list[ReplicaRecord],
    policy: ModelPolicy,
    memory: PlannerMemory,
    now: float,
    hold_s: float,
    lost: frozenset[str],
    keep: set[str],
) -> Command | None:
    enabled = [r for r in recs if r.admin is AdminState.ENABLED and r.spec.node not in lost]
    if any(r.observed_at <= 0.0 for r in enabled):
        return None  # a replica has not reported yet (cluster starting): unknown is not lost
    if policy.redundancy is Redundancy.ACTIVE_ACTIVE:
        return None  # every enabled replica is active: no standbys to wake
    need = needed_active(policy)
    serving = [r for r in enabled if r.role is Role.ACTIVE and r.may_serve(lost)]
    standbys = [r for r in enabled if r.role is Role.STANDBY]
    ready = [r for r in standbys if could_serve(r, lost)]
    pending = [  # woken and on their way (not failing: then the next one is woken too)
        r
        for r in standbys
        if _woken(r) and r not in ready and r.process not in (Observed.BACKOFF, Observed.CRASH_LOOP)
    ]
    # An active still in its first start (never seen serving) is capacity on its way, not
    # lost: a cluster starting cold does not wake its standbys.
    loading = [
        r
        for r in enabled
        if r.role is Role.ACTIVE
        and r.process is Observed.STARTING
        and r.spec.name not in memory.served
        and not r.may_serve(lost)
    ]
    short = need - len(serving) - len(ready) - len(pending) - len(loading)
    if short > 0:
        asleep = sorted(
            (
                r
                for r in standbys
                if r.actuated and r.desired in _WAKE_ORDER and r.desired_by != "operator"
            ),
            key=lambda r: (_WAKE_ORDER[r.desired], r.spec.name),
        )
        if asleep:
            pick = asleep[0]
            how = "waking" if pick.desired is Desired.SLEEP else "starting"
            return _set_desired(
                pick,
                Desired.RUN,
                f"capacity: {len(serving)}/{need} active replicas of {policy.name} serve; "
                f"{how} standby {pick.spec.name} ({pick.standby.value})",
            )
        return None
    if len(serving) < need:
        return None  # a woken standby is on its way, or promotion is up to plan_roles
    for rec in sorted((r for r in standbys if _woken(r)), key=lambda r: r.spec.name):
        keep.add(rec.spec.name)
        since = memory.rest_since.setdefault(rec.spec.name, now)
        if now - since >= hold_s:
            del memory.rest_since[rec.spec.name]
            mode = desired_for_standby(rec.standby)
            return _set_desired(
                rec,
                mode,
                f"{policy.name} has {len(serving)}/{need} serving for {hold_s:g}s; "
                f"back to {rec.standby.value}",
            )
    return None
