"""The leader's planner: traffic weights and replica roles, as pure decisions.

Input: the replicated view, the models' redundancy policies, the time. Output: commands for
consensus, each role change with its reason. Only the leader runs it; a new leader starts with
an empty :class:`PlannerMemory` and picks up from the replicated state (roles and weights are
in the state, only the demotion hold timer restarts).

Redundancy modes:
- ``n_plus_1``: ``min_active`` replicas serve, standbys take over when one is lost;
- ``primary_standby``: one primary serves (min_active 1), a standby takes over;
- ``active_active``: every enabled replica serves, weighted.
GPU memory past the prepare mark on an active replica promotes a standby ahead of trouble;
when pressure has subsided for ``demote_hold_s``, the planner demotes what it promoted.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from hanode.cluster.document import Command
from hanode.cluster.view import ClusterView, ReplicaRecord
from hanode.policies.weights import WeightInput, WeightThresholds, compute_weights
from hanode.pool.replica import AdminState, Role, may_serve

WEIGHT_EPSILON = 0.02


class Redundancy(enum.StrEnum):
    N_PLUS_1 = "n_plus_1"
    PRIMARY_STANDBY = "primary_standby"
    ACTIVE_ACTIVE = "active_active"


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    name: str
    min_active: int = 1
    redundancy: Redundancy = Redundancy.N_PLUS_1


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    """From the config ([thresholds], [cluster]): no defaults here that could drift from it."""

    weights: WeightThresholds
    gpu_prepare: float  # [thresholds] gpu_mem_prepare
    demote_hold_s: float  # [cluster] demote_hold_s
    calm_margin: float = 0.05  # policy: pressure subsided = every active below prepare - margin


@dataclass(slots=True)
class PlannerMemory:
    """Leader-local memory: since when each model has been calm (for demotion hysteresis)."""

    calm_since: dict[str, float] = field(default_factory=dict)
    rest_since: dict[str, float] = field(default_factory=dict)  # woken standbys not needed
    served: set[str] = field(default_factory=set)  # seen serving since (re)started on purpose


def could_serve(rec: ReplicaRecord, lost: frozenset[str]) -> bool:
    """Could serve if active: the one may-serve rule, whatever the replica's role (a standby
    asleep or stopped is not ready: it must be woken first, see ``process_plan``)."""
    return may_serve(Role.ACTIVE, rec.admin, rec.observation, rec.spec.node in lost, rec.process_up)


_ready = could_serve


def needed_active(policy: ModelPolicy) -> int:
    """How many active replicas of the model must serve."""
    return 1 if policy.redundancy is Redundancy.PRIMARY_STANDBY else policy.min_active


def _gpu(rec: ReplicaRecord) -> float:
    g = rec.observation.gpu_mem_frac
    return g if g is not None else 0.0


def plan_weights(view: ClusterView, settings: PlannerSettings) -> Command | None:
    inputs = {
        name: WeightInput(r.spec.model, r.role, r.admin, r.observation)
        for name, r in view.replicas.items()
    }
    weights = {n: round(w, 4) for n, w in compute_weights(inputs, settings.weights).items()}
    current = view.weights
    if set(weights) == set(current) and all(
        abs(weights[n] - current[n]) < WEIGHT_EPSILON for n in weights
    ):
        return None
    return {"op": "set_weights", "weights": weights}


def plan_roles(
    view: ClusterView,
    policies: Mapping[str, ModelPolicy],
    settings: PlannerSettings,
    memory: PlannerMemory,
    now: float,
    hold: frozenset[str] = frozenset(),
) -> list[Command]:
    """At most one role change per model per round: the cluster settles, then we look again.
    Models in ``hold`` (a rolling reload runs) get no demotion: the rollout counts on them."""
    out: list[Command] = []
    by_model: dict[str, list[ReplicaRecord]] = {}
    for rec in view.replicas.values():
        by_model.setdefault(rec.spec.model, []).append(rec)
    for model, recs in sorted(by_model.items()):
        policy = policies.get(model, ModelPolicy(model))
        cmd = _plan_model(recs, policy, settings, memory, now, view.lost_nodes)
        if cmd is not None and model in hold and cmd["role"] == Role.STANDBY.value:
            memory.calm_since.pop(model, None)
            continue
        if cmd is not None:
            out.append(cmd)
    return out


def _promote(rec: ReplicaRecord, reason: str) -> Command:
    return {
        "op": "set_role",
        "replica": rec.spec.name,
        "role": Role.ACTIVE.value,
        "reason": reason,
        "planned": True,
        "by": "planner",
    }


def _plan_model(
    recs: list[ReplicaRecord],
    policy: ModelPolicy,
    settings: PlannerSettings,
    memory: PlannerMemory,
    now: float,
    lost: frozenset[str] = frozenset(),
) -> Command | None:
    enabled = [r for r in recs if r.admin is AdminState.ENABLED]
    actives = [r for r in enabled if r.role is Role.ACTIVE]
    standbys = sorted(
        (r for r in enabled if r.role is Role.STANDBY and _ready(r, lost)),
        key=lambda r: (_gpu(r), r.spec.name),
    )
    serving = [r for r in actives if _ready(r, lost)]
    need = needed_active(policy)
    model = policy.name
    if any(r.observed_at <= 0.0 and r.spec.node not in lost for r in enabled):
        return None  # a replica has not reported yet (cluster starting): unknown is not lost

    if policy.redundancy is Redundancy.ACTIVE_ACTIVE:
        memory.calm_since.pop(model, None)
        if standbys:
            return _promote(standbys[0], "active-active: every enabled replica serves")
        return None

    gone = [r.spec.name for r in actives if not _ready(r, lost) and not r.expected_down]
    if len(serving) < need and standbys:
        memory.calm_since.pop(model, None)
        what = f"lost {', '.join(gone)}" if gone else "not enough active replicas"
        return _promote(
            standbys[0],
            f"capacity: {len(serving)}/{need} active replicas of {model} serve ({what})",
        )
    pressured = [r for r in serving if _gpu(r) >= settings.gpu_prepare]
    spare = len(serving) - len(pressured)
    if pressured and spare < need and standbys:
        memory.calm_since.pop(model, None)
        hot = max(pressured, key=_gpu)
        return _promote(
            standbys[0],
            f"GPU memory on {hot.spec.name} at {_gpu(hot):.0%}: prepare capacity",
        )

    promoted = [r for r in serving if r.promoted]
    calm = all(_gpu(r) < settings.gpu_prepare - settings.calm_margin for r in serving)
    if not promoted or not calm or len(serving) - 1 < need:
        memory.calm_since.pop(model, None)
        return None
    since = memory.calm_since.setdefault(model, now)
    if now - since < settings.demote_hold_s:
        return None
    memory.calm_since.pop(model, None)
    victim = max(promoted, key=lambda r: (_gpu(r), r.spec.name))
    return {
        "op": "set_role",
        "replica": victim.spec.name,
        "role": Role.STANDBY.value,
        "reason": f"capacity restored and pressure subsided for {settings.demote_hold_s:g}s",
        "planned": True,
        "by": "planner",
    }
