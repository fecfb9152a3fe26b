"""The replicated state machine: deterministic, idempotent commands; immutable frozen views."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest

from hanode.cluster.document import (
    MAX_EVENTS,
    PROTOCOL,
    digest,
    empty_doc,
    observation_doc,
    spec_doc,
    stamp,
    upgrade_doc,
)
from hanode.cluster.state import CommandError, Fenced, IncompatibleCommand, apply
from hanode.cluster.view import freeze
from hanode.pool.replica import AdminState, HealthLevel, Observation, ReplicaSpec, Role
from tests.unit.cluster.helpers import spec

REGISTER_NODE = {
    "op": "register_node",
    "name": "n1",
    "raft": "127.0.0.1:7001",
    "api": "127.0.0.1:9201",
    "router": "127.0.0.1:8080",
    "ops": "127.0.0.1:9100",
    "ts": 10.0,
}


def base_doc() -> dict[str, Any]:
    doc = empty_doc()
    apply(doc, dict(REGISTER_NODE))
    apply(doc, {"op": "register_replica", "spec": spec("r1"), "ts": 11.0})
    apply(doc, {"op": "register_replica", "spec": spec("r2", role="standby"), "ts": 11.0})
    apply(
        doc,
        {"op": "observe", "replica": "r1", "obs": {"level": 3, "gpu_mem_frac": 0.5}, "ts": 12.0},
    )
    return doc


# Every command the cluster writes, as it travels (JSON values only).
COMMANDS: list[dict[str, Any]] = [
    dict(REGISTER_NODE),
    {"op": "register_replica", "spec": spec("r3"), "ts": 20.0},
    {"op": "register_replica", "spec": {**spec("r1"), "url": "http://127.0.0.1:9999"}, "ts": 20.0},
    {"op": "observe", "replica": "r1", "obs": {"level": 2, "reason": "L3: slow"}, "ts": 21.0},
    {"op": "observe", "replica": "r2", "obs": {"level": 3, "kv_usage": 0.1}, "ts": 21.0},
    {"op": "set_admin", "replicas": ["r1", "r2"], "admin": "drained", "by": "n2", "ts": 22.0},
    {"op": "set_admin", "replicas": ["r1"], "admin": "enabled", "by": "n2", "ts": 22.5},
    {"op": "set_role", "replica": "r2", "role": "active", "reason": "x", "planned": True, "ts": 23},
    {"op": "set_role", "replica": "r1", "role": "standby", "reason": "op", "ts": 23.5},
    {"op": "set_weights", "weights": {"r1": 0.5, "r2": 1.0, "ghost": 1.0}, "ts": 24.0},
    {
        "op": "open_breaker",
        "replica": "r1",
        "failure_class": "gpu_oom",
        "open_s": 5.0,
        "node": "n2",
        "id": "n2-1",
        "ts": 25.0,
    },
    {"op": "reset_breaker", "replica": "r1", "by": "n3", "ts": 26.0},
    {"op": "claim_leader", "node": "n1", "term": 3, "ts": 27.0},
    {"op": "expire_breakers", "ids": {"r1": "n2-1"}, "term": 3, "leader": "n1", "ts": 28.0},
    {"op": "node_lost", "name": "n1", "silent_s": 7.0, "term": 3, "leader": "n1", "ts": 29.0},
    {"op": "node_back", "name": "n1", "term": 3, "leader": "n1", "ts": 30.0},
    {"op": "checkpoint", "id": "c1", "term": 3, "leader": "n1", "ts": 31.0},
    {"op": "checkpoint_report", "id": "c1", "node": "n1", "digest": "abc", "ts": 32.0},
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: str(c["op"]))
def test_applying_a_command_twice_leaves_the_same_state(cmd: dict[str, Any]) -> None:
    once = leader_doc("n1", 3) if "term" in cmd else base_doc()
    apply(once, copy.deepcopy(cmd))
    twice = copy.deepcopy(once)
    apply(twice, copy.deepcopy(cmd))
    assert twice == once
    assert freeze(twice, 7) == freeze(once, 7)


def test_reset_breaker_repeated_records_one_event() -> None:
    doc = base_doc()
    apply(
        doc,
        {
            "op": "open_breaker",
            "replica": "r1",
            "failure_class": "server_error",
            "open_s": 5.0,
            "id": "x",
            "ts": 30.0,
        },
    )
    cmd = {"op": "reset_breaker", "replica": "r1", "by": "n1", "ts": 31.0}
    assert apply(doc, dict(cmd)) is True
    assert apply(doc, dict(cmd)) is False  # nothing left to remove
    resets = [e for e in doc["events"] if e["kind"] == "breaker" and "reset" in e["message"]]
    assert len(resets) == 1, resets
    assert doc["resets"] == {"r1": 31.0} and doc["breakers"] == {}
    # a later, distinct reset (new ts) is recorded again
    apply(doc, {**cmd, "ts": 40.0})
    resets = [e for e in doc["events"] if e["kind"] == "breaker" and "reset" in e["message"]]
    assert len(resets) == 2 and doc["resets"] == {"r1": 40.0}


def test_replaying_the_log_is_deterministic_and_json_safe() -> None:
    a, b = empty_doc(), empty_doc()
    for cmd in [dict(REGISTER_NODE), *COMMANDS]:
        payload = json.dumps(cmd)
        for doc in (a, b):
            with contextlib.suppress(CommandError):  # observe of a replica not registered
                apply(doc, json.loads(payload))
    assert a == b
    assert json.loads(json.dumps(a)) == a  # the document stays plain JSON values


def test_register_keeps_role_and_admin_across_restarts() -> None:
    doc = base_doc()
    apply(doc, {"op": "set_admin", "replicas": ["r1"], "admin": "drained", "ts": 13.0})
    apply(doc, {"op": "set_role", "replica": "r2", "role": "active", "ts": 13.0})
    # the nodes restart and register their (unchanged) configuration again
    apply(doc, {"op": "register_replica", "spec": spec("r1"), "ts": 50.0})
    apply(doc, {"op": "register_replica", "spec": spec("r2", role="standby"), "ts": 50.0})
    assert doc["replicas"]["r1"]["admin"] == "drained"
    assert doc["replicas"]["r2"]["role"] == "active"
    registered = [e for e in doc["events"] if e["message"] == "replica registered"]
    assert [e["subject"] for e in registered] == ["r1", "r2"]


def test_observe_records_a_health_event_only_on_level_change() -> None:
    doc = base_doc()
    seq = doc["seq"]
    apply(doc, {"op": "observe", "replica": "r1", "obs": {"level": 3}, "ts": 13.0})
    assert doc["seq"] == seq
    apply(doc, {"op": "observe", "replica": "r1", "obs": {"level": 0, "reason": "L1"}, "ts": 14})
    assert doc["seq"] == seq + 1
    assert doc["events"][-1]["message"] == "HEALTHY -> DOWN: L1"


def test_set_role_planned_flag_and_event() -> None:
    doc = base_doc()
    cmd = {"op": "set_role", "replica": "r2", "role": "active", "planned": True, "ts": 13.0}
    assert apply(doc, {**cmd, "reason": "capacity", "by": "planner"}) is True
    rec = doc["replicas"]["r2"]
    assert rec["role"] == "active" and rec["promoted"] is True
    assert doc["events"][-1]["message"] == "promoted: capacity"
    assert apply(doc, {"op": "set_role", "replica": "r2", "role": "standby", "ts": 14.0})
    assert doc["replicas"]["r2"]["promoted"] is False
    # an operator's promotion is not "planned": the planner will not demote it
    apply(doc, {"op": "set_role", "replica": "r2", "role": "active", "ts": 15.0})
    assert doc["replicas"]["r2"]["promoted"] is False


def test_open_breaker_is_a_duration_keyed_by_its_id() -> None:
    doc = base_doc()
    cmd = {"op": "open_breaker", "replica": "r1", "failure_class": "timeout", "ts": 13.0}
    assert apply(doc, {**cmd, "open_s": 5.0, "node": "n1", "id": "a"}) is True
    assert apply(doc, {**cmd, "open_s": 5.0, "node": "n1", "id": "a"}) is False  # repeated
    assert doc["breakers"]["r1"]["open_s"] == 5.0 and doc["breakers"]["r1"]["node"] == "n1"
    assert apply(doc, {**cmd, "open_s": 10.0, "node": "n2", "id": "b"}) is True  # a new open
    assert doc["breakers"]["r1"]["open_s"] == 10.0
    opened = [e for e in doc["events"] if e["kind"] == "breaker"]
    assert len(opened) == 1  # re-opening is not a new opening
    for bad in (0.0, -1.0, 1e9, float("nan")):
        with pytest.raises(CommandError):
            apply(doc, {**cmd, "open_s": bad, "id": "c"})


def leader_doc(node: str = "n1", term: int = 3) -> dict[str, Any]:
    doc = base_doc()
    assert apply(doc, {"op": "claim_leader", "node": node, "term": term, "ts": 20.0}) is True
    return doc


def test_leader_claims_only_move_forward_and_record_one_event() -> None:
    doc = leader_doc("n1", 3)
    assert doc["leader"] == {"node": "n1", "term": 3}
    assert apply(doc, {"op": "claim_leader", "node": "n1", "term": 3, "ts": 21.0}) is False
    with pytest.raises(Fenced):
        apply(doc, {"op": "claim_leader", "node": "n2", "term": 2, "ts": 22.0})
    with pytest.raises(Fenced):  # two leaders in one term cannot both be right
        apply(doc, {"op": "claim_leader", "node": "n2", "term": 3, "ts": 22.0})
    assert apply(doc, {"op": "claim_leader", "node": "n2", "term": 4, "ts": 23.0}) is True
    claims = [e for e in doc["events"] if e["kind"] == "leader"]
    assert [(e["subject"], e["fields"]["term"]) for e in claims] == [("n1", 3), ("n2", 4)]


@pytest.mark.parametrize(
    "cmd",
    [
        {"op": "set_weights", "weights": {"r1": 0.1}},
        {"op": "set_role", "replica": "r2", "role": "active", "planned": True},
        {"op": "expire_breakers", "ids": {}},
        {"op": "node_lost", "name": "n1"},
        {"op": "node_back", "name": "n1"},
    ],
    ids=lambda c: str(c["op"]),
)
def test_a_deposed_leaders_decisions_are_refused(cmd: dict[str, Any]) -> None:
    doc = leader_doc("n1", 3)
    apply(doc, {"op": "claim_leader", "node": "n2", "term": 4, "ts": 21.0})
    before = copy.deepcopy(doc)
    for stale in ({"term": 3, "leader": "n1"}, {"term": 4, "leader": "n1"}):
        with pytest.raises(Fenced):
            apply(doc, {**cmd, **stale, "ts": 22.0})
        assert doc == before
    apply(doc, {**cmd, "term": 4, "leader": "n2", "ts": 22.0})  # the current leader's applies


def test_lease_decisions_need_a_term() -> None:
    doc = leader_doc()
    for op in ("expire_breakers", "node_lost", "node_back"):
        with pytest.raises(Fenced):
            apply(doc, {"op": op, "name": "n1", "ids": {}, "ts": 1.0})


def test_node_lost_takes_its_replicas_down_until_they_report_again() -> None:
    doc = leader_doc()
    apply(doc, {"op": "register_node", "name": "n2", "raft": "h:2", "protocol": 2, "ts": 1.0})
    apply(doc, {"op": "register_replica", "spec": spec("r9", node="n2"), "ts": 1.0})
    apply(doc, {"op": "observe", "replica": "r9", "obs": {"level": 3}, "ts": 2.0})
    fence = {"term": 3, "leader": "n1"}
    lost = {"op": "node_lost", "name": "n2", "silent_s": 6.5, **fence, "ts": 3.0}
    assert apply(doc, dict(lost)) == ["r9"]
    assert apply(doc, dict(lost)) == []  # idempotent: no second event
    view = freeze(doc, 1)
    assert view.lost_nodes == {"n2"} and view.nodes["n2"].lost
    assert view.replicas["r9"].observation.level is HealthLevel.DOWN
    assert view.replicas["r9"].observation.reason == "node n2 lost"
    assert view.replicas["r1"].observation.level is HealthLevel.HEALTHY  # other nodes' stay
    # a re-registration (the node restarted) does not end the loss: only the leader says so
    apply(doc, {"op": "register_node", "name": "n2", "raft": "h:2", "protocol": 2, "ts": 4.0})
    assert freeze(doc, 2).nodes["n2"].lost
    assert apply(doc, {"op": "node_back", "name": "n2", **fence, "ts": 5.0}) is True
    assert apply(doc, {"op": "node_back", "name": "n2", **fence, "ts": 5.0}) is False
    view = freeze(doc, 3)
    assert not view.lost_nodes
    assert view.replicas["r9"].observation.level is HealthLevel.DOWN  # until it reports
    messages = [e["message"] for e in doc["events"] if e["kind"] == "membership"]
    assert messages[-2].startswith("node lost: n1 has not heard from it for 6.5s")
    assert messages[-1] == "node back"


def test_commands_of_a_newer_protocol_are_refused_loudly_not_skipped() -> None:
    doc = base_doc()
    before = copy.deepcopy(doc)
    with pytest.raises(IncompatibleCommand, match="unknown"):
        apply(doc, {"op": "teleport", "ts": 1.0})
    with pytest.raises(IncompatibleCommand, match="needs protocol 9"):
        apply(doc, {"op": "observe", "replica": "r1", "obs": {"level": 1}, "v": 9, "ts": 1.0})
    claim = stamp({"op": "claim_leader", "node": "n1", "term": 1, "ts": 1.0})
    assert claim["v"] == 2
    with pytest.raises(IncompatibleCommand, match="needs protocol 2; this node speaks protocol 1"):
        apply(doc, claim, protocol=1)
    assert doc == before
    assert "v" not in stamp({"op": "observe"})  # protocol 1 commands stay as they were


def test_cluster_version_is_the_lowest_protocol_among_nodes() -> None:
    doc = base_doc()  # n1 registered without a protocol: an old node, protocol 1
    assert freeze(doc, 1).cluster_version == 1
    apply(doc, {**REGISTER_NODE, "protocol": PROTOCOL})
    apply(doc, {"op": "register_node", "name": "n2", "raft": "h:2", "protocol": 2, "ts": 1.0})
    assert freeze(doc, 2).cluster_version == 2
    apply(doc, {"op": "register_node", "name": "n3", "raft": "h:3", "protocol": 1, "ts": 1.0})
    assert freeze(doc, 3).cluster_version == 1
    apply(doc, {"op": "forget_node", "name": "n3", "ts": 2.0})  # the old node left
    assert freeze(doc, 4).cluster_version == 2


def test_digest_follows_the_state_not_the_object() -> None:
    a, b = base_doc(), base_doc()
    assert digest(a) == digest(b) == freeze(a, 1).digest
    apply(b, {"op": "set_weights", "weights": {"r1": 0.5}, "ts": 1.0})
    assert digest(a) != digest(b)


def test_upgrade_of_a_protocol_1_document_drops_wall_clock_breakers() -> None:
    old = base_doc()
    del old["schema"], old["leader"]
    old["breakers"] = {"r1": {"failure_class": "x", "until": 1e9, "node": "n2", "opened": 1.0}}
    doc = upgrade_doc(old)
    assert doc["schema"] == 2 and doc["breakers"] == {}
    assert doc["leader"] == {"node": "", "term": 0}
    freeze(doc, 1)  # readable


@pytest.mark.parametrize(
    "cmd",
    [
        {"ts": 1.0},
        {"op": "observe", "replica": "ghost", "obs": {"level": 3}, "ts": 1.0},
        {"op": "set_admin", "replicas": ["r1", "ghost"], "admin": "drained", "ts": 1.0},
        {"op": "set_role", "replica": "ghost", "role": "active", "ts": 1.0},
        {"op": "open_breaker", "replica": "ghost", "failure_class": "x", "open_s": 9, "ts": 1},
        {"op": "node_lost", "name": "ghost", "term": 3, "leader": "n1", "ts": 1},
    ],
)
def test_bad_commands_leave_the_state_unchanged(cmd: dict[str, Any]) -> None:
    doc = leader_doc()
    before = copy.deepcopy(doc)
    with pytest.raises(CommandError):
        apply(doc, cmd)
    assert doc == before  # set_admin checks every name before changing any


def test_events_are_bounded() -> None:
    doc = empty_doc()
    for i in range(MAX_EVENTS + 30):
        apply(doc, {"op": "add_event", "kind": "k", "subject": "s", "message": str(i), "ts": i})
    assert len(doc["events"]) == MAX_EVENTS
    assert doc["events"][-1]["seq"] == MAX_EVENTS + 30
    view = freeze(doc, 1)
    assert len(view.events) == 200 and view.events[-1]["message"] == str(MAX_EVENTS + 29)


def test_freeze_is_pure_and_the_view_immutable() -> None:
    doc = base_doc()
    apply(doc, {"op": "set_weights", "weights": {"r1": 0.7}, "ts": 13.0})
    snapshot = copy.deepcopy(doc)
    v1, v2 = freeze(doc, 5), freeze(doc, 5)
    assert v1 == v2 and doc == snapshot
    assert v1.index == 5
    r1 = v1.replicas["r1"]
    assert r1.role is Role.ACTIVE and r1.admin is AdminState.ENABLED
    assert r1.observation.level is HealthLevel.HEALTHY and r1.observation.gpu_mem_frac == 0.5
    assert v1.replicas["r2"].role is Role.STANDBY
    assert v1.nodes["n1"].raft == "127.0.0.1:7001"
    with pytest.raises(TypeError):
        v1.weights["r1"] = 0.0  # type: ignore[index]
    with pytest.raises(TypeError):
        v1.replicas["r9"] = r1  # type: ignore[index]
    with pytest.raises(TypeError):
        v1.nodes["n9"] = v1.nodes["n1"]  # type: ignore[index]
    # later commands change the document, never a view already handed out
    apply(doc, {"op": "set_admin", "replicas": ["r1"], "admin": "drained", "ts": 14.0})
    apply(doc, {"op": "set_weights", "weights": {"r1": 0.1}, "ts": 14.0})
    apply(doc, {"op": "register_node", **{**REGISTER_NODE, "raft": "127.0.0.1:1"}})
    assert v1 == v2
    assert v1.replicas["r1"].admin is AdminState.ENABLED and v1.weights["r1"] == 0.7
    assert v1.nodes["n1"].raft == "127.0.0.1:7001"


def test_spec_and_observation_round_trip_through_the_document() -> None:
    rs = ReplicaSpec("r7", "m", "http://h:1", "sglang", Role.STANDBY, 3, "n9")
    obs = Observation(HealthLevel.DEGRADED, 0.91, 0.2, 4.0, 1.0, 300.0, 40.0, True, "L3 gpu")
    doc = empty_doc()
    apply(doc, {"op": "register_replica", "spec": spec_doc(rs), "ts": 1.0})
    apply(doc, {"op": "observe", "replica": "r7", "obs": observation_doc(obs), "ts": 2.0})
    rec = freeze(json.loads(json.dumps(doc)), 1).replicas["r7"]
    assert rec.spec == rs
    assert rec.observation == obs
    assert rec.observed_at == 2.0


def test_forget_node_drops_its_replicas_and_is_idempotent() -> None:
    doc = empty_doc()
    apply(doc, {"op": "register_node", "name": "n4", "raft": "h:4", "ts": 1.0})
    for r, node in (("r4", "n4"), ("r1", "n1")):
        spec = {"name": r, "model": "m", "url": "http://h:1", "node": node}
        apply(doc, {"op": "register_replica", "spec": spec, "ts": 1.0})
    apply(doc, {"op": "set_weights", "weights": {"r4": 1.0, "r1": 1.0}, "ts": 1.0})
    assert apply(doc, {"op": "forget_node", "name": "n4", "ts": 2.0}) == ["r4"]
    assert set(doc["replicas"]) == {"r1"} and "n4" not in doc["nodes"]
    assert "r4" not in doc["weights"]
    events = len(doc["events"])
    assert apply(doc, {"op": "forget_node", "name": "n4", "ts": 3.0}) == []
    assert len(doc["events"]) == events


def test_checkpoints_collect_one_report_per_node_for_the_current_one_only() -> None:
    doc = leader_doc()
    fence = {"term": 3, "leader": "n1"}
    assert apply(doc, {"op": "checkpoint", "id": "c1", **fence, "ts": 1.0}) is True
    report = {"op": "checkpoint_report", "id": "c1", "ts": 2.0}
    assert apply(doc, {**report, "node": "n1", "digest": "aa"}) is True
    assert apply(doc, {**report, "node": "n2", "digest": "bb"}) is True
    view = freeze(doc, 1)
    assert view.checkpoint_id == "c1"
    assert dict(view.checkpoint_reports) == {"n1": "aa", "n2": "bb"}
    apply(doc, {"op": "checkpoint", "id": "c2", **fence, "ts": 3.0})
    assert apply(doc, {**report, "node": "n3", "digest": "cc"}) is False  # for c1: too late
    assert freeze(doc, 2).checkpoint_reports == {}
    with pytest.raises(Fenced):
        apply(doc, {"op": "checkpoint", "id": "c3", "ts": 4.0})
    with pytest.raises(CommandError):
        apply(doc, {"op": "checkpoint_report", "id": "c2", "node": "n1", "digest": "", "ts": 5})
