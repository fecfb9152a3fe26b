"""The leader's rolling reloads of a model's replicas, as pure decisions (no I/O, no clock).

A rollout (``hanodectl reload MODEL``) lives in the replicated state: the replicas in their
reload order and each one's step. Every round the leader calls :func:`plan_rollouts` with the
view and the time; the answer is fenced commands that move replicas forward and the replicas
that want warm-up prompts now (the leader loop sends them). A new leader starts with an empty
:class:`RolloutMemory` and carries on from the recorded steps: its timers (drain timeout,
reload timeout, ramp) start when it first sees a step, which errs on the side of waiting.

One replica's steps: ``waiting`` -> ``draining`` (out of routing everywhere; its in-flight
requests, counted by every node's router, finish or the drain timeout passes) ->
``reloading`` (its node restarts it, or calls the engine's reload: a new generation in the
state, carried out once) -> ``warming`` (its node saw L2 pass since the reload; warm-up
prompts) -> ``ramping`` (back in routing, slow start) -> ``done``. A standby takes no traffic:
it skips the drain. ``failed``: it did not pass L2 within ``reload_timeout_s``; the rollout
stops and every replica it drained is enabled again.

Capacity: an active replica is drained only when the model keeps ``min_active`` serving
without it and fewer than ``max_unavailable`` replicas are out or still ramping up;
otherwise the rollout waits and says why. With ``surge`` the rollout first reloads a
standby and promotes it, so capacity never dips; it is demoted again (back to its standby
mode) once the rollout is over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from hanode.cluster.document import Command
from hanode.cluster.planner import ModelPolicy, could_serve, needed_active
from hanode.cluster.view import ClusterView, ReplicaRecord, RolloutRecord, RolloutReplica
from hanode.pool.lifecycle import Desired, Observed, desired_for_standby
from hanode.pool.replica import AdminState, Role

OUT_STEPS = ("draining", "reloading", "warming")  # out of service (ramping serves again)
MOVING_STEPS = (*OUT_STEPS, "ramping")


@dataclass(frozen=True, slots=True)
class RolloutSettings:
    """From [rollout] and [health] (no defaults here that could drift from the config)."""

    reload_timeout_s: float  # a reloaded replica must pass L2 within this
    ramp_s: float  # how long a replica ramps (slow start) before the next one goes
    warmup_prompts: int  # warm-up prompts after L2 (0: none)


@dataclass(slots=True)
class RolloutMemory:
    """Leader-local: when this leader first saw each step, and warm-ups done or running."""

    seen: dict[tuple[str, str, str], float] = field(default_factory=dict)
    warmed: set[tuple[str, str]] = field(default_factory=set)
    warming: set[tuple[str, str]] = field(default_factory=set)

    def since(self, rid: str, name: str, step: str, now: float) -> float:
        return now - self.seen.setdefault((rid, name, step), now)


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    commands: list[Command]
    warmups: list[tuple[str, str]]  # (rollout id, replica) to warm up now


def plan_rollouts(
    view: ClusterView,
    policies: Mapping[str, ModelPolicy],
    memory: RolloutMemory,
    now: float,
    settings: RolloutSettings,
) -> RolloutPlan:
    commands: list[Command] = []
    warmups: list[tuple[str, str]] = []
    live: set[str] = set()
    for model, ro in sorted(view.rollouts.items()):
        live.add(ro.id)
        policy = policies.get(model, ModelPolicy(model))
        if ro.running:
            cmds, warm = _plan_running(view, ro, policy, memory, now, settings)
            commands += cmds
            warmups += warm
        else:
            commands += _release_surge(view, ro, policy)
    for key in [k for k in memory.seen if k[0] not in live]:
        del memory.seen[key]
    memory.warmed = {k for k in memory.warmed if k[0] in live}
    return RolloutPlan(commands, warmups)


def rolling_models(view: ClusterView) -> frozenset[str]:
    """Models with a rollout running or a surge standby still to give back: the planner
    holds its demotions of them (it must not fight the rollout)."""
    return frozenset(
        m
        for m, ro in view.rollouts.items()
        if ro.running or (ro.surge_replica and ro.surge_state in ("woken", "promoted"))
    )


def _cmd(ro: RolloutRecord, op: str, **fields: object) -> Command:
    return {"op": op, "model": ro.model, "id": ro.id, **fields}


def _step(ro: RolloutRecord, name: str, step: str, reason: str = "", **extra: object) -> Command:
    return _cmd(ro, "rollout_step", replica=name, step=step, reason=reason, **extra)


def _serving(view: ClusterView, model: str) -> list[ReplicaRecord]:
    lost = view.lost_nodes
    return [
        r
        for r in view.replicas.values()
        if r.spec.model == model and r.role is Role.ACTIVE and r.may_serve(lost)
    ]


def _reloaded(rec: ReplicaRecord, st: RolloutReplica, lost: frozenset[str]) -> bool:
    """Its node carried out the reload this rollout asked for, and saw it pass L2 since."""
    done = rec.reload_done if st.how == "engine" else rec.restart_done
    if done < st.gen or not may_serve_enabled(rec, lost):
        return False
    return not rec.actuated or rec.process is Observed.RUNNING


def may_serve_enabled(rec: ReplicaRecord, lost: frozenset[str]) -> bool:
    """Could it serve if it were enabled and active (the one may-serve rule)?"""
    if rec.admin is not AdminState.ENABLED:
        rec = replace(rec, admin=AdminState.ENABLED)
    return could_serve(rec, lost)


def _plan_running(
    view: ClusterView,
    ro: RolloutRecord,
    policy: ModelPolicy,
    memory: RolloutMemory,
    now: float,
    settings: RolloutSettings,
) -> tuple[list[Command], list[tuple[str, str]]]:
    out: list[Command] = []
    warm: list[tuple[str, str]] = []
    lost = view.lost_nodes
    need = needed_active(policy)
    # 1. replicas on their way
    for st in ro.replicas:
        rec = view.replicas.get(st.name)
        if rec is None:
            out.append(_step(ro, st.name, "failed", "the replica is gone from the cluster"))
            out.append(_finish(ro, "failed", f"{st.name} is gone from the cluster"))
            return out, warm
        if st.step not in MOVING_STEPS:
            continue
        elapsed = memory.since(ro.id, st.name, st.step, now)
        if st.step == "draining":
            nodes = [n for n, info in view.nodes.items() if not info.lost]
            left = sum(st.inflight.get(n, 0) for n in nodes)
            reported = all(n in st.inflight for n in nodes)
            if (reported and left == 0) or elapsed >= ro.drain_timeout_s:
                why = (
                    "drained"
                    if reported and left == 0
                    else f"drain timeout {ro.drain_timeout_s:g}s ({left} still in flight)"
                )
                out.append(_reload(ro, rec, why))
        elif st.step == "reloading":
            if _reloaded(rec, st, lost):
                out.append(_step(ro, st.name, "warming", "passed L2 after the reload"))
            elif elapsed >= settings.reload_timeout_s:
                why = (
                    f"{st.name} did not pass L2 within {settings.reload_timeout_s:g}s of its "
                    f"reload ({rec.process.value}"
                    + (f": {rec.process_detail}" if rec.process_detail else "")
                    + ")"
                )
                out.append(_step(ro, st.name, "failed", why))
                out.append(_finish(ro, "failed", why))
                return out, warm
        elif st.step == "warming":
            key = (ro.id, st.name)
            if key in memory.warmed or settings.warmup_prompts <= 0:
                if st.name == ro.surge_replica and rec.role is Role.STANDBY:
                    out.append(_promote(ro, rec))
                    out.append(_cmd(ro, "rollout_note", surge_state="promoted"))
                out.append(_step(ro, st.name, "ramping", "warmed up"))
            elif elapsed >= settings.reload_timeout_s:
                why = (
                    f"{st.name} stopped passing L2 while warming up"
                    if not may_serve_enabled(rec, lost)
                    else f"{st.name}'s warm-up prompts failed for {settings.reload_timeout_s:g}s"
                )
                out.append(_step(ro, st.name, "failed", why))
                out.append(_finish(ro, "failed", why))
                return out, warm
            elif key not in memory.warming:
                warm.append(key)
        elif st.step == "ramping" and elapsed >= settings.ramp_s:
            out.append(_step(ro, st.name, "done", "ramped up"))
    if all(st.step == "done" for st in ro.replicas):
        out.append(_finish(ro, "done", ""))
        return out, warm
    if out:
        return out, warm  # let this round's moves apply, then look again
    # 2. the next replicas
    waiting = [st for st in ro.replicas if st.step == "waiting"]
    if not waiting:
        return out, warm
    # A replica still ramping counts too: the next one goes once it has its whole weight.
    out_now = sum(1 for st in ro.replicas if st.step in MOVING_STEPS)
    surge = ro.surge_replica
    surge_st = ro.step(surge) if surge else None
    serving = _serving(view, ro.model)
    why = ""
    for st in waiting:
        rec = view.replicas[st.name]
        if st.name == surge or rec.role is Role.STANDBY:
            # no traffic on it: reload it at once (the surge standby runs from now on)
            if st.name == surge and rec.desired is not Desired.RUN:
                out.append(_surge_run(ro, rec))
                out.append(_cmd(ro, "rollout_note", surge_state="woken"))
            out.append(_reload(ro, rec, "a standby: no traffic to drain"))
            return out, warm
        if surge_st is not None and surge_st.step not in ("ramping", "done"):
            why = f"waiting for the surge standby {surge} to serve before draining {st.name}"
            break
        if out_now >= ro.max_unavailable:
            why = f"waiting: {out_now} of at most {ro.max_unavailable} replicas out or ramping up"
            break
        up = could_serve(rec, lost) and rec.admin is AdminState.ENABLED
        if up and len(serving) - 1 < need:
            why = (
                f"waiting: draining {st.name} would leave {len(serving) - 1} serving "
                f"replicas of {ro.model}, min_active is {need}"
            )
            break
        out.append(_step(ro, st.name, "draining", "taking it out of routing"))
        out_now += 1
        if up:
            serving = [r for r in serving if r.spec.name != st.name]
    if why != ro.waiting:
        out.append(_cmd(ro, "rollout_note", waiting=why))
    return out, warm


def _reload(ro: RolloutRecord, rec: ReplicaRecord, why: str) -> Command:
    """The reload request: the next generation, in the same command as the step."""
    engine = rec.reload == "engine"
    current = (
        max(rec.reload_gen, rec.reload_done) if engine else max(rec.restart_gen, rec.restart_done)
    )
    return _step(
        ro,
        rec.spec.name,
        "reloading",
        why,
        gen=current + 1,
        how="engine" if engine else "restart",
    )


def _finish(ro: RolloutRecord, state: str, reason: str) -> Command:
    return _cmd(ro, "finish_rollout", state=state, reason=reason)


def _surge_run(ro: RolloutRecord, rec: ReplicaRecord) -> Command:
    return {
        "op": "set_desired",
        "replica": rec.spec.name,
        "desired": Desired.RUN.value,
        "by": "rollout",
        "reason": f"surge standby of rollout {ro.id}",
    }


def _promote(ro: RolloutRecord, rec: ReplicaRecord) -> Command:
    # Not "planned": the planner never demotes it; the rollout does when it is over.
    return {
        "op": "set_role",
        "replica": rec.spec.name,
        "role": Role.ACTIVE.value,
        "reason": f"surge standby of rollout {ro.id}",
        "by": "rollout",
    }


def _release_surge(view: ClusterView, ro: RolloutRecord, policy: ModelPolicy) -> list[Command]:
    """After the rollout: the surge standby goes back to being a standby, once the model
    keeps ``min_active`` serving without it (until then it keeps serving)."""
    if not ro.surge_replica or ro.surge_state not in ("woken", "promoted"):
        return []
    rec = view.replicas.get(ro.surge_replica)
    release = _cmd(ro, "rollout_note", surge_state="released")
    if rec is None:
        return [release]
    if rec.role is Role.STANDBY:
        back = desired_for_standby(rec.standby)
        out: list[Command] = []
        if rec.desired is not back and rec.desired_by == "rollout":
            out.append(
                {
                    "op": "set_desired",
                    "replica": rec.spec.name,
                    "desired": back.value,
                    "by": "rollout",
                    "reason": f"rollout {ro.id} over: back to {rec.standby.value}",
                }
            )
        return [*out, release]
    others = [r for r in _serving(view, ro.model) if r.spec.name != rec.spec.name]
    if len(others) < needed_active(policy):
        return []  # the model needs it for now
    return [
        {
            "op": "set_role",
            "replica": rec.spec.name,
            "role": Role.STANDBY.value,
            "reason": f"surge of rollout {ro.id} over",
            "by": "rollout",
        },
        release,
    ]


def plan_order(view: ClusterView, model: str, surge: bool) -> tuple[list[str], str, str]:
    """The replicas a new rollout of ``model`` reloads, in order, its surge standby, and a
    problem that refuses it ("" when none). Standbys take no traffic: they go first (the
    surge standby first of all); a standby asleep or stopped starts from the new version when
    it is next started, so only a surge standby of theirs is reloaded. Replicas an operator
    drained are left out."""
    recs = sorted(
        (r for r in view.replicas.values() if r.spec.model == model), key=lambda r: r.spec.name
    )
    if not recs:
        return [], "", f"unknown model '{model}'"
    enabled = [r for r in recs if r.admin is AdminState.ENABLED]
    standbys = [r for r in enabled if r.role is Role.STANDBY]
    running = [r for r in standbys if r.desired is Desired.RUN]
    actives = [r for r in enabled if r.role is Role.ACTIVE]
    pick = ""
    if surge:
        spare = [r for r in standbys if r.actuated and r not in running] + [
            r for r in running if r.actuated
        ]
        if not spare:
            return [], "", f"--surge needs an enabled standby of {model} with an actuator"
        pick = spare[0].spec.name
    order = ([pick] if pick else []) + [
        r.spec.name for r in [*running, *actives] if r.spec.name != pick
    ]
    for name in order:
        if not view.replicas[name].actuated:
            return (
                [],
                "",
                (
                    f'\'{name}\' has no actuator (set actuator = "command" or "systemd" in its '
                    "[[replicas]] entry): hanode cannot reload it"
                ),
            )
    if not order:
        return [], "", f"{model} has no enabled replica to reload"
    return order, pick, ""


def rollout_doc(ro: RolloutRecord, view: ClusterView) -> dict[str, object]:
    """A rollout as the control API's dicts (and ``hanodectl reload --status --json``)."""
    lost = view.lost_nodes
    return {
        "id": ro.id,
        "model": ro.model,
        "state": ro.state,
        "waiting": ro.waiting,
        "reason": ro.reason,
        "by": ro.by,
        "surge_replica": ro.surge_replica,
        "surge_state": ro.surge_state,
        "max_unavailable": ro.max_unavailable,
        "drain_timeout_s": ro.drain_timeout_s,
        "started": ro.started,
        "finished": ro.finished,
        "duration_s": ro.duration_s,
        "serving": len(_serving(view, ro.model)),
        "replicas": [
            {
                "name": st.name,
                "step": st.step,
                "reason": st.reason,
                "inflight": sum(st.inflight.values()),
                "unavailable_s": st.unavailable_s,
                "serving": (rec := view.replicas.get(st.name)) is not None and rec.may_serve(lost),
            }
            for st in ro.replicas
        ],
    }
