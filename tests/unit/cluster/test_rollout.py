"""Rolling reloads: the pure planner (``cluster/rollout.py``) in a deterministic world that
goes through the real state machine, with nodes that carry restarts out one round later.

Invariants (also under hypothesis): never fewer than min_active serving while no replica
fails; no replica reloaded twice in a rollout, across leader changes; an abort or a failure
leaves every replica the rollout drained enabled; a new leader carries on from the recorded
steps.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.cluster.document import Command, Doc, empty_doc, stamp
from hanode.cluster.planner import ModelPolicy, PlannerMemory, plan_roles
from hanode.cluster.process_plan import plan_process
from hanode.cluster.rollout import (
    RolloutMemory,
    RolloutSettings,
    plan_order,
    plan_rollouts,
    rolling_models,
    rollout_doc,
)
from hanode.cluster.state import CommandError, Fenced, apply
from hanode.cluster.view import ClusterView, freeze
from hanode.pool.lifecycle import Desired
from tests.unit.cluster.helpers import MODEL, spec
from tests.unit.cluster.recovery_world import SETTINGS

RSET = RolloutSettings(reload_timeout_s=10.0, ramp_s=2.0, warmup_prompts=1)


class RolloutWorld:
    def __init__(self, names: list[str], min_active: int, standbys: dict[str, str] | None = None):
        self.doc: Doc = empty_doc()
        self.now = 100.0
        self.term = 1
        self.policies = {MODEL: ModelPolicy(MODEL, min_active)}
        self.planner = PlannerMemory()
        self.memory = RolloutMemory()
        self.broken: set[str] = set()  # its restarts fail (the start command fails)
        self.starting: dict[str, int] = {}  # restarted, passes L2 next round
        self.restarts: dict[str, int] = {}  # restarts carried out per replica
        self.min_serving = 99
        self.write({"op": "register_node", "name": "n1", "protocol": 4})
        self.write({"op": "claim_leader", "node": "n1", "term": 1})
        for name in names:
            self._add(name, "active", "hot")
        for name, mode in (standbys or {}).items():
            self._add(name, "standby", mode)

    def _add(self, name: str, role: str, standby: str) -> None:
        raw = {**spec(name, role=role), "actuated": True, "standby": standby}
        self.write({"op": "register_replica", "spec": raw})
        self.settle(name)

    def write(self, cmd: Command) -> Any:
        cmd = stamp(copy.deepcopy(cmd))
        cmd.setdefault("ts", self.now)
        return apply(self.doc, cmd)

    @property
    def view(self) -> ClusterView:
        return freeze(self.doc, 1)

    def report(self, name: str, state: str, level: int, done: int) -> None:
        self.write(
            {
                "op": "report_process",
                "replica": name,
                "node": "n1",
                "state": state,
                "restart_done": done,
            }
        )
        self.write({"op": "observe", "replica": name, "obs": {"level": level}})

    def settle(self, name: str) -> None:
        """The node: restarts asked for, the desired state, L2 one round after a start."""
        rec = self.view.replicas[name]
        if rec.reload_gen > rec.reload_done:  # an engine reload: the process stays
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.write(
                {"op": "report_reload", "replica": name, "node": "n1", "done": rec.reload_gen}
            )
            return
        if rec.restart_gen > rec.restart_done:
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.starting[name] = rec.restart_gen
            self.report(name, "starting", 0, rec.restart_gen)
            return
        if name in self.starting:
            del self.starting[name]
            if name in self.broken:
                self.report(name, "backoff", 0, rec.restart_done)
                return
        if name in self.broken and rec.process.value == "backoff":
            return
        if rec.desired is Desired.RUN:
            self.report(name, "running", 3, rec.restart_done)
        elif rec.desired is Desired.SLEEP:
            self.report(name, "sleeping", 1, rec.restart_done)
        else:
            self.report(name, "stopped", 0, rec.restart_done)
        # every router has nothing in flight on a draining replica
        for ro in self.view.rollouts.values():
            step = ro.step(name)
            if ro.running and step is not None and step.step == "draining":
                self.write(
                    {
                        "op": "report_inflight",
                        "model": ro.model,
                        "id": ro.id,
                        "replica": name,
                        "node": "n1",
                        "inflight": 0,
                    }
                )

    def start(self, surge: bool = False, max_unavailable: int = 1) -> str:
        order, pick, problem = plan_order(self.view, MODEL, surge)
        assert not problem, problem
        self.write(
            {
                "op": "start_rollout",
                "model": MODEL,
                "id": "r1",
                "replicas": order,
                "surge_replica": pick,
                "surge": surge,
                "max_unavailable": max_unavailable,
                "drain_timeout_s": 5.0,
                "by": "test",
            }
        )
        return "r1"

    def new_leader(self) -> None:
        self.term += 1
        self.write({"op": "claim_leader", "node": "n1", "term": self.term})
        self.memory = RolloutMemory()
        self.planner = PlannerMemory()

    def round(self, dt: float = 1.0) -> list[Command]:
        view = self.view
        plan = plan_rollouts(view, self.policies, self.memory, self.now, RSET)
        hold = rolling_models(view)
        out = list(plan.commands)
        out += plan_roles(view, self.policies, SETTINGS, self.planner, self.now, hold)
        out += plan_process(view, self.policies, self.planner, self.now, 10.0)
        for cmd in out:
            self.write({**cmd, "term": self.term, "leader": "n1"})
        self.memory.warmed |= set(plan.warmups)  # the warm-up prompts answered
        for name in sorted(self.view.replicas):
            self.settle(name)
        self.now += dt
        self.min_serving = min(self.min_serving, len(self.serving()))
        return out

    def serving(self) -> list[str]:
        v = self.view
        return sorted(
            n for n, r in v.replicas.items() if r.role.value == "active" and r.may_serve()
        )

    def run(self, rounds: int = 60) -> str:
        for _ in range(rounds):
            self.round()
            ro = self.view.rollouts[MODEL]
            if not ro.running and ro.surge_state not in ("woken", "promoted"):
                return ro.state
        return self.view.rollouts[MODEL].state

    def steps(self) -> dict[str, str]:
        return {s.name: s.step for s in self.view.rollouts[MODEL].replicas}


def test_three_replicas_reload_one_at_a_time_never_below_min_active() -> None:
    w = RolloutWorld(["a", "b", "c"], min_active=2)
    w.start()
    assert w.run() == "done"
    assert w.restarts == {"a": 1, "b": 1, "c": 1}
    assert w.min_serving == 2
    assert w.serving() == ["a", "b", "c"]
    assert all(r.admin.value == "enabled" for r in w.view.replicas.values())
    ro = w.view.rollouts[MODEL]
    assert ro.duration_s is not None and all(s.unavailable_s is not None for s in ro.replicas)
    kinds = [e["message"] for e in w.view.events if e["kind"] == "rollout"]
    assert any("a waiting -> draining" in k for k in kinds)
    assert any("a reloading -> warming" in k for k in kinds)


def test_min_active_equal_to_replicas_waits_and_says_why() -> None:
    w = RolloutWorld(["a", "b"], min_active=2)
    w.start()
    for _ in range(5):
        w.round()
    ro = w.view.rollouts[MODEL]
    assert ro.running and "min_active is 2" in ro.waiting, ro.waiting
    assert w.restarts == {} and w.min_serving == 2


def test_surge_wakes_a_standby_first_and_capacity_never_dips() -> None:
    w = RolloutWorld(["a", "b", "c"], min_active=3, standbys={"s": "sleep"})
    w.start(surge=True)
    assert w.run() == "done"
    assert w.min_serving == 3
    assert w.restarts == {"s": 1, "a": 1, "b": 1, "c": 1}
    view = w.view
    assert view.replicas["s"].role.value == "standby"  # given back afterwards
    assert view.replicas["s"].desired is Desired.SLEEP
    assert view.rollouts[MODEL].surge_state == "released"


def test_a_replica_that_does_not_come_back_fails_the_rollout_and_the_rest_serve() -> None:
    w = RolloutWorld(["a", "b", "c"], min_active=2)
    w.broken.add("b")
    w.start()
    assert w.run() == "failed"
    ro = w.view.rollouts[MODEL]
    assert "b did not pass L2" in ro.reason
    assert w.steps() == {"a": "done", "b": "failed", "c": "waiting"}
    assert all(r.admin.value == "enabled" for r in w.view.replicas.values())
    assert w.serving() == ["a", "c"] and w.restarts.get("c") is None


def test_abort_enables_every_drained_replica() -> None:
    w = RolloutWorld(["a", "b", "c"], min_active=1)
    w.start(max_unavailable=2)
    w.round()
    assert sum(1 for s in w.steps().values() if s == "draining") == 2
    assert w.write({"op": "abort_rollout", "model": MODEL, "by": "op"}) is True
    assert w.view.rollouts[MODEL].state == "aborted"
    assert all(r.admin.value == "enabled" for r in w.view.replicas.values())
    for _ in range(5):
        w.round()
    assert w.serving() == ["a", "b", "c"]
    assert w.write({"op": "abort_rollout", "model": MODEL, "by": "op"}) is False  # idempotent


def test_a_new_leader_resumes_mid_reload_without_reloading_anything_twice() -> None:
    w = RolloutWorld(["a", "b", "c"], min_active=2)
    w.start()
    while w.steps()["b"] != "reloading":
        w.round()
    w.new_leader()
    assert w.run() == "done"
    assert w.restarts == {"a": 1, "b": 1, "c": 1}


def test_rollout_commands_are_fenced_and_idempotent() -> None:
    w = RolloutWorld(["a", "b"], min_active=1)
    w.start()
    step = {"op": "rollout_step", "model": MODEL, "id": "r1", "replica": "a", "step": "draining"}
    with pytest.raises(Fenced):
        w.write(step)
    with pytest.raises(Fenced):
        w.write({**step, "term": 0, "leader": "n1"})
    assert w.write({**step, "term": 1, "leader": "n1"}) is True
    assert w.write({**step, "term": 1, "leader": "n1"}) is False  # repeated: nothing changes
    back = {**step, "step": "waiting", "term": 1, "leader": "n1"}
    assert w.write(back) is False  # steps only move forward
    again = {"op": "start_rollout", "model": MODEL, "id": "r1", "replicas": ["a"], "by": "x"}
    assert w.write(again) is False
    with pytest.raises(CommandError):
        w.write({**again, "id": "r2"})  # one running rollout per model
    assert w.view.replicas["a"].admin.value == "drained"


def test_plan_order_refuses_what_it_cannot_reload() -> None:
    doc = empty_doc()
    apply(doc, {"op": "register_replica", "spec": spec("x"), "ts": 1.0})
    view = freeze(doc, 1)
    assert "no actuator" in plan_order(view, MODEL, False)[2]
    assert "unknown model" in plan_order(view, "other", False)[2]
    w = RolloutWorld(["a"], min_active=1)
    assert "--surge needs" in plan_order(w.view, MODEL, True)[2]


def test_rollout_doc_names_every_replica_step() -> None:
    w = RolloutWorld(["a", "b"], min_active=1)
    w.start()
    w.round()
    doc = rollout_doc(w.view.rollouts[MODEL], w.view)
    assert [(r["name"], r["step"]) for r in doc["replicas"]] == [
        ("a", "draining"),
        ("b", "waiting"),
    ]
    assert doc["serving"] == 1


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 4),
    spare=st.integers(0, 2),
    surge=st.booleans(),
    max_unavailable=st.integers(1, 3),
    events=st.lists(st.sampled_from(["round", "leader", "abort", "break"]), max_size=40),
)
def test_invariants_under_leader_changes_aborts_and_failures(
    n: int, spare: int, surge: bool, max_unavailable: int, events: list[str]
) -> None:
    names = [f"r{i}" for i in range(n)]
    min_active = max(1, n - spare)
    w = RolloutWorld(names, min_active, standbys={"s": "sleep"} if surge else None)
    w.start(surge=surge, max_unavailable=max_unavailable)
    broke = False
    for event in [*events, *["round"] * 80]:
        if event == "leader":
            w.new_leader()
        elif event == "abort":
            w.write({"op": "abort_rollout", "model": MODEL, "by": "op"})
        elif event == "break" and not broke:
            broke = True
            w.broken.add(names[-1])
        else:
            w.round()
        if not broke:
            assert len(w.serving()) >= min_active, (w.steps(), w.serving())
        assert all(count <= 1 for count in w.restarts.values()), w.restarts
        ro = w.view.rollouts[MODEL]
        if not ro.running:
            assert all(r.admin.value == "enabled" for r in w.view.replicas.values())
            assert all(not s.drained for s in ro.replicas)
    ro = w.view.rollouts[MODEL]
    if min_active == n and not surge and "abort" not in events:
        assert ro.running and "min_active" in ro.waiting  # it cannot go on: it says why
        return
    assert not ro.running  # it always ends: done, failed or aborted
    if ro.state == "done":
        assert set(w.restarts) == {s.name for s in ro.replicas}


def test_engine_reload_replicas_are_reloaded_by_their_engine_not_restarted() -> None:
    w = RolloutWorld(["a", "b"], min_active=1)
    w.doc["replicas"]["b"]["spec"]["reload"] = "engine"  # as its node registers it
    w.start()
    assert w.run() == "done"
    view = w.view
    assert (view.replicas["b"].reload_done, view.replicas["b"].restart_gen) == (1, 0)
    assert (view.replicas["a"].restart_done, view.replicas["a"].reload_gen) == (1, 0)
    assert w.restarts == {"a": 1, "b": 1}


def test_a_protocol_3_node_refuses_rollout_commands_and_the_state_says_protocol_4() -> None:
    from hanode.cluster.state import IncompatibleCommand

    w = RolloutWorld(["a", "b"], min_active=1)
    w.start()
    assert w.doc["protocol_high"] == 4  # an older node loading this dump halts (raft_store)
    cmd = stamp({"op": "abort_rollout", "model": MODEL, "ts": 1.0})
    assert cmd["v"] == 4
    with pytest.raises(IncompatibleCommand):
        apply(copy.deepcopy(w.doc), cmd, protocol=3)


def test_the_planner_demotes_nothing_of_a_model_while_its_rollout_runs() -> None:
    w = RolloutWorld(["a", "b", "c"], min_active=1)
    # c was promoted by the planner earlier (planned); the model is calm
    w.doc["replicas"]["c"]["promoted"] = True
    w.start()
    hold = rolling_models(w.view)
    assert hold == {MODEL}
    planner = PlannerMemory()
    for t in (0.0, 100.0):  # past the demotion hold
        assert plan_roles(w.view, w.policies, SETTINGS, planner, w.now + t, hold) == []
    free = PlannerMemory()  # without the hold the same view demotes c after the calm period
    assert plan_roles(w.view, w.policies, SETTINGS, free, w.now, frozenset()) == []
    later = plan_roles(w.view, w.policies, SETTINGS, free, w.now + 20.0, frozenset())
    assert [(c["replica"], c["role"]) for c in later] == [("c", "standby")]
