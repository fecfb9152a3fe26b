"""The leader's planner: promotions, GPU-memory preparation, demotion hysteresis, weights."""

from __future__ import annotations

from typing import Any

from hanode.cluster.document import empty_doc
from hanode.cluster.planner import (
    ModelPolicy,
    PlannerMemory,
    PlannerSettings,
    Redundancy,
    plan_roles,
    plan_weights,
)
from hanode.cluster.state import apply
from hanode.cluster.view import ClusterView, freeze
from hanode.policies.weights import WeightThresholds
from tests.unit.cluster.helpers import MODEL, replica, view

SETTINGS = PlannerSettings(WeightThresholds(), gpu_prepare=0.80, demote_hold_s=30.0)


def policy(
    min_active: int = 1, mode: Redundancy = Redundancy.N_PLUS_1, model: str = MODEL
) -> dict[str, ModelPolicy]:
    return {model: ModelPolicy(model, min_active, mode)}


def roles(
    v: ClusterView,
    policies: dict[str, ModelPolicy],
    now: float = 0.0,
    memory: PlannerMemory | None = None,
) -> list[dict[str, Any]]:
    return plan_roles(v, policies, SETTINGS, memory or PlannerMemory(), now)


# -- promotion on a lost active ------------------------------------------------------------------
def test_lost_active_promotes_a_serving_standby_and_says_why() -> None:
    v = view(
        ("r1", {"level": 0}),  # DOWN
        ("r2", {}),
        ("r3", {"role": "standby"}),
    )
    [cmd] = roles(v, policy(min_active=2))
    assert cmd["op"] == "set_role" and cmd["replica"] == "r3" and cmd["role"] == "active"
    assert cmd["planned"] is True and cmd["by"] == "planner"
    assert "1/2" in cmd["reason"] and "lost r1" in cmd["reason"], cmd["reason"]


def test_no_promotion_while_enough_actives_serve() -> None:
    v = view(("r1", {}), ("r2", {}), ("r3", {"role": "standby"}))
    assert roles(v, policy(min_active=2)) == []
    v = view(("r1", {"level": 0}), ("r2", {}), ("r3", {"role": "standby"}))
    assert roles(v, policy(min_active=1)) == []


def test_degraded_active_still_counts_as_serving() -> None:
    v = view(("r1", {"level": 2}), ("r2", {"role": "standby"}))
    assert roles(v, policy(min_active=1)) == []


def test_only_serving_enabled_standbys_are_promoted() -> None:
    lost = ("r1", {"level": 0})
    assert roles(view(lost, ("r2", {"role": "standby", "level": 1})), policy()) == []
    assert roles(view(lost, ("r2", {"role": "standby", "admin": "drained"})), policy()) == []
    assert roles(view(lost, ("r2", {"role": "standby", "gpu_removed": True})), policy()) == []


def test_drained_active_does_not_count_and_standby_takes_over() -> None:
    v = view(("r1", {"admin": "drained"}), ("r2", {"role": "standby"}))
    [cmd] = roles(v, policy())
    assert cmd["replica"] == "r2" and "0/1" in cmd["reason"]
    assert "not enough active replicas" in cmd["reason"]  # drained is not "lost"


def test_standby_with_the_least_gpu_memory_goes_first() -> None:
    v = view(
        ("r1", {"level": 0}),
        ("s1", {"role": "standby", "gpu": 0.6}),
        ("s2", {"role": "standby", "gpu": 0.3}),
        ("s3", {"role": "standby", "gpu": 0.3}),
    )
    [cmd] = roles(v, policy())
    assert cmd["replica"] == "s2"  # lowest GPU memory, then name


def test_primary_standby_needs_one_primary_whatever_min_active_says() -> None:
    v = view(("r1", {}), ("r2", {"role": "standby"}))
    assert roles(v, policy(min_active=3, mode=Redundancy.PRIMARY_STANDBY)) == []
    v = view(("r1", {"level": 0}), ("r2", {"role": "standby"}))
    [cmd] = roles(v, policy(min_active=3, mode=Redundancy.PRIMARY_STANDBY))
    assert cmd["replica"] == "r2" and "0/1" in cmd["reason"]


# -- GPU memory: prepare capacity ahead of trouble -----------------------------------------------
def test_gpu_memory_past_prepare_promotes_a_standby() -> None:
    v = view(("r1", {"gpu": 0.86}), ("r2", {"role": "standby", "gpu": 0.4}))
    [cmd] = roles(v, policy(min_active=1))
    assert cmd["replica"] == "r2" and cmd["role"] == "active"
    assert "GPU memory on r1 at 86%" in cmd["reason"], cmd["reason"]


def test_gpu_prepare_names_the_hottest_replica() -> None:
    v = view(("r1", {"gpu": 0.82}), ("r2", {"gpu": 0.88}), ("s", {"role": "standby"}))
    [cmd] = roles(v, policy(min_active=2))
    assert "r2 at 88%" in cmd["reason"]


def test_gpu_pressure_with_enough_spare_actives_promotes_nothing() -> None:
    v = view(("r1", {"gpu": 0.86}), ("r2", {"gpu": 0.5}), ("s", {"role": "standby"}))
    assert roles(v, policy(min_active=1)) == []  # r2 alone covers min_active
    assert roles(view(("r1", {"gpu": 0.79}), ("s", {"role": "standby"})), policy()) == []


# -- demotion: only after the hold, only when calm, only what the planner promoted --------------
def promoted_view(gpu: float = 0.5, hot: float = 0.5) -> ClusterView:
    return view(("r1", {"gpu": hot}), ("r2", {"gpu": 0.4}), ("r3", {"promoted": True, "gpu": gpu}))


def test_demotion_waits_for_the_hold() -> None:
    memory = PlannerMemory()
    pol = policy(min_active=2)
    v = promoted_view()
    assert plan_roles(v, pol, SETTINGS, memory, 100.0) == []  # calm starts now
    assert plan_roles(v, pol, SETTINGS, memory, 129.9) == []
    [cmd] = plan_roles(v, pol, SETTINGS, memory, 130.0)
    assert cmd["replica"] == "r3" and cmd["role"] == "standby" and cmd["planned"] is True
    assert "subsided for 30s" in cmd["reason"]


def test_pressure_during_the_hold_restarts_it() -> None:
    memory = PlannerMemory()
    pol = policy(min_active=2)
    assert plan_roles(promoted_view(), pol, SETTINGS, memory, 0.0) == []
    # 0.78 is below prepare (no promotion) but above prepare - margin: not calm
    assert plan_roles(promoted_view(hot=0.78), pol, SETTINGS, memory, 20.0) == []
    assert plan_roles(promoted_view(), pol, SETTINGS, memory, 31.0) == []  # hold restarted
    assert plan_roles(promoted_view(), pol, SETTINGS, memory, 60.9) == []
    [cmd] = plan_roles(promoted_view(), pol, SETTINGS, memory, 61.0)
    assert cmd["role"] == "standby"


def test_no_demotion_when_capacity_would_fall_short() -> None:
    memory = PlannerMemory()
    v = view(("r1", {"level": 0}), ("r2", {}), ("r3", {"promoted": True}))
    for now in (0.0, 100.0, 1000.0):
        assert plan_roles(v, policy(min_active=2), SETTINGS, memory, now) == []


def test_operator_promotion_is_never_demoted_by_the_planner() -> None:
    memory = PlannerMemory()
    v = view(("r1", {}), ("r2", {}), ("r3", {}))  # all active, none promoted by the planner
    for now in (0.0, 100.0, 1000.0):
        assert plan_roles(v, policy(min_active=1), SETTINGS, memory, now) == []


def test_the_hottest_promoted_replica_is_demoted_first() -> None:
    memory = PlannerMemory()
    v = view(
        ("r1", {}),
        ("p1", {"promoted": True, "gpu": 0.3}),
        ("p2", {"promoted": True, "gpu": 0.6}),
    )
    assert plan_roles(v, policy(), SETTINGS, memory, 0.0) == []
    [cmd] = plan_roles(v, policy(), SETTINGS, memory, 30.0)
    assert cmd["replica"] == "p2"


def test_a_new_leader_restarts_the_hold() -> None:
    v = promoted_view()
    old = PlannerMemory()
    assert plan_roles(v, policy(min_active=2), SETTINGS, old, 0.0) == []
    fresh = PlannerMemory()  # what a new leader starts with
    assert plan_roles(v, policy(min_active=2), SETTINGS, fresh, 40.0) == []
    assert plan_roles(v, policy(min_active=2), SETTINGS, fresh, 70.0) != []


# -- active-active and one change per model per round -------------------------------------------
def test_active_active_promotes_every_enabled_standby_one_per_round() -> None:
    doc = empty_doc()
    replica(doc, "a", role="active")
    for name in ("s1", "s2", "s3"):
        replica(doc, name, role="standby")
    replica(doc, "d", role="standby", admin="drained")
    replica(doc, "down", role="standby", level=0)
    pol = policy(min_active=1, mode=Redundancy.ACTIVE_ACTIVE)
    promoted = []
    for round_ in range(10):
        cmds = plan_roles(freeze(doc, round_), pol, SETTINGS, PlannerMemory(), float(round_))
        assert len(cmds) <= 1, cmds
        if not cmds:
            break
        assert "active-active" in cmds[0]["reason"]
        promoted.append(cmds[0]["replica"])
        apply(doc, {**cmds[0], "ts": float(round_)})
    assert sorted(promoted) == ["s1", "s2", "s3"]
    final = freeze(doc, 99)
    assert final.replicas["d"].role.value == "standby"  # drained: left alone
    assert final.replicas["down"].role.value == "standby"  # not serving: not yet


def test_active_active_never_demotes() -> None:
    memory = PlannerMemory()
    v = view(("r1", {}), ("r2", {"promoted": True}))
    pol = policy(mode=Redundancy.ACTIVE_ACTIVE)
    assert plan_roles(v, pol, SETTINGS, memory, 0.0) == []
    assert plan_roles(v, pol, SETTINGS, memory, 1000.0) == []


def test_one_change_per_model_per_round() -> None:
    v = view(
        ("a1", {"model": "A", "level": 0}),
        ("a2", {"model": "A", "level": 0}),
        ("as1", {"model": "A", "role": "standby"}),
        ("as2", {"model": "A", "role": "standby"}),
        ("b1", {"model": "B", "level": 0}),
        ("bs1", {"model": "B", "role": "standby"}),
        ("c1", {"model": "C"}),
    )
    pols = {**policy(min_active=2, model="A"), **policy(min_active=1, model="B")}
    cmds = roles(v, pols)
    assert [c["replica"] for c in cmds] == ["as1", "bs1"]  # sorted by model, one each


def test_unconfigured_model_gets_the_default_policy() -> None:
    v = view(("x1", {"model": "X", "level": 0}), ("xs", {"model": "X", "role": "standby"}))
    [cmd] = roles(v, {})
    assert cmd["replica"] == "xs"


# -- weights -------------------------------------------------------------------------------------
def test_plan_weights_only_writes_meaningful_changes() -> None:
    v = view(("r1", {}), ("r2", {"role": "standby"}), ("r3", {"admin": "drained"}))
    cmd = plan_weights(v, SETTINGS)
    assert cmd == {"op": "set_weights", "weights": {"r1": 1.0, "r2": 0.0, "r3": 0.0}}
    same = view(
        ("r1", {}),
        ("r2", {"role": "standby"}),
        ("r3", {"admin": "drained"}),
        weights=cmd["weights"],
    )
    assert plan_weights(same, SETTINGS) is None
    close = view(
        ("r1", {}),
        ("r2", {"role": "standby"}),
        ("r3", {"admin": "drained"}),
        weights={"r1": 0.99, "r2": 0.0, "r3": 0.0},
    )
    assert plan_weights(close, SETTINGS) is None  # within epsilon
    stale = view(
        ("r1", {"gpu": 0.92}),
        ("r2", {"role": "standby"}),
        ("r3", {"admin": "drained"}),
        weights=cmd["weights"],
    )
    new = plan_weights(stale, SETTINGS)
    assert new is not None and new["weights"]["r1"] < 0.5


def test_no_promotion_while_a_replica_has_never_reported() -> None:
    """At cluster start an unreported active is unknown, not lost."""
    from hanode.cluster.planner import ModelPolicy, PlannerMemory, plan_roles

    doc = empty_doc()
    for name, role in (("r1", "active"), ("r2", "standby")):
        spec = {"name": name, "model": "m", "url": "http://h:1", "node": "n", "role": role}
        apply(doc, {"op": "register_replica", "spec": spec, "ts": 1.0})
    apply(doc, {"op": "observe", "replica": "r2", "obs": {"level": 3}, "ts": 2.0})
    policies = {"m": ModelPolicy("m", min_active=1)}
    assert plan_roles(freeze(doc, 1), policies, SETTINGS, PlannerMemory(), 3.0) == []
    apply(doc, {"op": "observe", "replica": "r1", "obs": {"level": 0}, "ts": 3.0})
    out = plan_roles(freeze(doc, 2), policies, SETTINGS, PlannerMemory(), 4.0)
    assert [(c["replica"], c["role"]) for c in out] == [("r2", "active")]
