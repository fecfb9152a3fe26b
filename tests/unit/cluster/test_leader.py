"""The leader loop against an in-memory store: claims, fencing, leases, breaker expiry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hanode.cluster.document import Doc, empty_doc, stamp
from hanode.cluster.leader import LeaderLoop, LeaderSettings
from hanode.cluster.leases import plan_leases
from hanode.cluster.planner import ModelPolicy, PlannerSettings
from hanode.cluster.state import apply
from hanode.cluster.view import freeze
from hanode.policies.weights import WeightThresholds
from hanode.pool.replica import HealthLevel, Role
from tests.unit.cluster.fake_store import FakeStore
from tests.unit.cluster.helpers import spec

LEASE = 6.0


def cluster_doc(protocol: int = 2) -> Doc:
    doc = empty_doc()
    for i in (1, 2, 3):
        apply(
            doc,
            {
                "op": "register_node",
                "name": f"n{i}",
                "raft": f"h:{i}",
                "protocol": protocol,
                "ts": 1.0,
            },
        )
    apply(doc, {"op": "register_replica", "spec": spec("a-0", node="n2"), "ts": 1.0})
    apply(doc, {"op": "register_replica", "spec": spec("a-1", role="standby", node="n3"), "ts": 1})
    for name in ("a-0", "a-1"):
        apply(doc, {"op": "observe", "replica": name, "obs": {"level": 3}, "ts": 2.0})
    return doc


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_loop(store: FakeStore, node: str = "n1", clock: Clock | None = None) -> LeaderLoop:
    async def write(command: dict[str, Any]) -> Any:
        command.setdefault("ts", 50.0)
        return await store.submit(stamp(command))

    return LeaderLoop(
        node,
        store,
        write,
        {"m": ModelPolicy("m", min_active=1)},
        PlannerSettings(WeightThresholds(), gpu_prepare=0.8, demote_hold_s=30.0),
        LeaderSettings(interval_s=1.0, lease_s=LEASE, checkpoint_s=30.0),
        clock=clock or Clock(),
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_new_leader_claims_its_term_before_deciding_anything() -> None:
    store = FakeStore(cluster_doc())
    store.term = 7
    loop = make_loop(store)
    run(loop.step())
    assert store.ops() == ["claim_leader"]
    assert (store.view.leader_node, store.view.leader_term) == ("n1", 7)
    run(loop.step())
    assert store.submitted[1]["op"] == "set_weights"
    assert store.submitted[1]["term"] == 7 and store.submitted[1]["leader"] == "n1"


def test_a_deposed_leaders_late_decisions_do_not_apply() -> None:
    store = FakeStore(cluster_doc())
    old = make_loop(store, "n1")
    store.term = 3
    run(old.step())  # n1 claims term 3
    store.apply_now({"op": "observe", "replica": "a-0", "obs": {"level": 0}, "ts": 9.5})
    decisions = old.decide(store.view, fenced=True)  # n1 decides to promote a-1...
    assert [c["op"] for c in decisions] == ["set_weights", "set_role"]
    # ...while the cluster elects n2, whose claim applies before n1's writes arrive:
    store.apply_now({"op": "claim_leader", "node": "n2", "term": 4, "ts": 9.0, "v": 2})
    for command in decisions:
        with pytest.raises(Exception, match="fenced"):
            run(store.submit(stamp(command)))
    assert store.view.replicas["a-1"].role is Role.STANDBY  # the promotion never applied
    # and n1's next round (its Raft still says term 3) cannot reclaim the cluster either
    with pytest.raises(Exception, match="stale leader claim"):
        run(old.step())
    assert store.view.leader_node == "n2"


def test_a_silent_node_is_lost_after_the_lease_and_its_capacity_restored() -> None:
    clock = Clock()
    store = FakeStore(cluster_doc())
    loop = make_loop(store, clock=clock)
    run(loop.step())  # claim
    store.silence = {"h:2": LEASE + 1.0, "h:3": 0.1}
    run(loop.step())
    assert "node_lost" not in store.ops()  # a new leader gives everyone a fresh lease first
    clock.now += LEASE
    run(loop.step())
    assert store.view.lost_nodes == {"n2"}
    assert store.view.replicas["a-0"].observation.level is HealthLevel.DOWN
    run(loop.step())  # the next round promotes the standby on the surviving node
    assert store.view.replicas["a-1"].role is Role.ACTIVE
    events = [e["message"] for e in store.view.events]
    assert any(m.startswith("node lost") for m in events)
    # it answers again: back, but its replicas wait for their own node's report
    store.silence = {"h:2": 0.2, "h:3": 0.1}
    run(loop.step())
    assert not store.view.lost_nodes
    assert store.view.replicas["a-0"].observation.level is HealthLevel.DOWN
    assert any(e["message"] == "node back" for e in store.view.events)


def test_breaker_records_expire_on_the_leaders_own_clock() -> None:
    clock = Clock()
    store = FakeStore(cluster_doc())
    loop = make_loop(store, clock=clock)
    run(loop.step())
    opened = {"op": "open_breaker", "replica": "a-0", "failure_class": "gpu_oom", "open_s": 5.0}
    store.apply_now({**opened, "node": "n2", "id": "x1", "ts": 1e12, "v": 2})  # any wall clock
    run(loop.step())
    clock.now += 4.9
    run(loop.step())
    assert "a-0" in store.view.breakers
    clock.now += 0.2
    run(loop.step())
    assert "a-0" not in store.view.breakers


def test_an_old_member_holds_the_cluster_version_and_the_new_commands_back() -> None:
    doc = cluster_doc()
    apply(doc, {"op": "register_node", "name": "n3", "raft": "h:3", "protocol": 1, "ts": 1.0})
    store = FakeStore(doc)
    assert store.view.cluster_version == 1
    loop = make_loop(store)
    store.silence = {"h:2": 100.0}
    for _ in range(3):
        run(loop.step())
    ops = set(store.ops())
    assert not ops & {"claim_leader", "node_lost", "node_back", "expire_breakers"}
    assert all("term" not in c for c in store.submitted)
    assert store.submitted[0]["op"] == "add_event"  # the leader says who it is, the old way
    # the old node leaves: the cluster version moves on and so does the leader
    apply(store.doc, {"op": "forget_node", "name": "n3", "ts": 2.0})
    store.publish()
    assert store.view.cluster_version == 2
    run(loop.step())
    assert store.submitted[-1]["op"] == "claim_leader"


def test_a_follower_does_nothing() -> None:
    store = FakeStore(cluster_doc())
    store.leader = False
    loop = make_loop(store)
    run(loop.step())
    assert store.submitted == []


def test_plan_leases_is_pure_and_skips_self_and_non_members() -> None:
    doc = cluster_doc()
    view = freeze(doc, 1)
    silence = {"h:1": 99.0, "h:2": 6.5}  # h:3 is not a Raft member
    assert plan_leases(view, silence, LEASE, "n1") == [
        {"op": "node_lost", "name": "n2", "silent_s": 6.5}
    ]
    assert plan_leases(view, {"h:2": 6.0}, LEASE, "n1") == []  # at the lease: still fine


def test_the_leader_marks_checkpoints_on_its_own_clock() -> None:
    clock = Clock()
    store = FakeStore(cluster_doc())
    loop = make_loop(store, clock=clock)
    run(loop.step())  # claim
    run(loop.step())
    assert "checkpoint" not in store.ops()
    clock.now += 30.0
    run(loop.step())
    first = store.view.checkpoint_id
    assert first and store.submitted[-1]["term"] == store.term
    clock.now += 10.0
    run(loop.step())
    assert store.view.checkpoint_id == first
    clock.now += 20.0
    run(loop.step())
    assert store.view.checkpoint_id not in ("", first)
