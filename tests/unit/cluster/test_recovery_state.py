"""Recovery commands of the state machine (protocol 3): desired state, restart requests,
process reports, incidents; all idempotent, leader decisions fenced."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.cluster.document import Doc, empty_doc, stamp
from hanode.cluster.state import CommandError, Fenced, IncompatibleCommand, apply
from hanode.cluster.view import freeze
from hanode.pool.lifecycle import Desired, Observed, StandbyMode
from hanode.pool.replica import Role
from tests.unit.cluster.helpers import spec


def doc_with(*, standby: str = "sleep") -> Doc:
    doc = empty_doc()
    apply(doc, {"op": "claim_leader", "node": "n1", "term": 5, "ts": 1.0, "v": 2})
    apply(doc, {"op": "register_replica", "spec": {**spec("a-0"), "actuated": True}, "ts": 1.0})
    standby_spec = {**spec("a-1", role="standby"), "actuated": True, "standby": standby}
    apply(doc, {"op": "register_replica", "spec": standby_spec, "ts": 1.0})
    apply(doc, {"op": "register_replica", "spec": spec("plain", role="standby"), "ts": 1.0})
    return doc


def twice(doc: Doc, cmd: dict[str, Any]) -> tuple[Any, Any]:
    cmd = stamp(dict(cmd))
    first = apply(doc, copy.deepcopy(cmd))
    after = copy.deepcopy(doc)
    second = apply(doc, copy.deepcopy(cmd))
    assert doc == after, "a repeated command changed the state"
    return first, second


def test_without_a_written_desired_state_a_replica_follows_its_role() -> None:
    view = freeze(doc_with(), 1)
    assert view.replicas["a-0"].desired is Desired.RUN
    assert view.replicas["a-1"].desired is Desired.SLEEP  # an actuated sleeping standby
    assert view.replicas["a-1"].standby is StandbyMode.SLEEP
    assert view.replicas["a-1"].expected_down and not view.replicas["a-1"].process_up
    # no actuator: hanode cannot put it anywhere, so it always counts as running
    assert view.replicas["plain"].desired is Desired.RUN
    assert view.replicas["plain"].process_up


def test_set_desired_is_idempotent_and_an_operator_wins_over_the_planner() -> None:
    doc = doc_with()
    op = {"op": "set_desired", "replica": "a-0", "desired": "sleep", "by": "operator", "ts": 2}
    assert twice(doc, op) == (True, False)
    assert freeze(doc, 1).replicas["a-0"].desired is Desired.SLEEP
    planner = {**op, "desired": "run", "by": "planner", "term": 5, "leader": "n1"}
    assert apply(doc, stamp(planner)) is False  # reached the log after the operator's
    assert freeze(doc, 1).replicas["a-0"].desired is Desired.SLEEP
    with pytest.raises(Fenced):
        apply(doc, stamp({**planner, "term": 4}))
    with pytest.raises(CommandError):
        apply(doc, stamp({**op, "desired": "explode"}))


def test_a_new_role_brings_its_own_process_state() -> None:
    doc = doc_with()
    apply(
        doc,
        stamp(
            {"op": "set_desired", "replica": "a-1", "desired": "run", "by": "planner", "ts": 2.0}
        ),
    )
    assert freeze(doc, 1).replicas["a-1"].desired is Desired.RUN
    apply(doc, {"op": "set_role", "replica": "a-1", "role": "active", "planned": True, "ts": 3})
    assert freeze(doc, 1).replicas["a-1"].desired is Desired.RUN
    apply(doc, {"op": "set_role", "replica": "a-1", "role": "standby", "planned": True, "ts": 4})
    rec = freeze(doc, 1).replicas["a-1"]
    assert rec.role is Role.STANDBY and rec.desired is Desired.SLEEP  # back to sleep


def test_restart_requests_count_up_and_repeat_safely() -> None:
    doc = doc_with()
    cmd = {"op": "request_restart", "replica": "a-0", "gen": 1, "by": "n2", "ts": 2.0}
    assert twice(doc, cmd) == (1, 1)
    assert apply(doc, stamp({**cmd, "gen": 1})) == 1
    assert apply(doc, stamp({**cmd, "gen": 2})) == 2
    assert freeze(doc, 1).replicas["a-0"].restart_gen == 2
    with pytest.raises(CommandError):
        apply(doc, stamp({**cmd, "gen": 0}))


def test_process_reports_come_from_the_replicas_own_node_only() -> None:
    doc = doc_with()
    cmd = {
        "op": "report_process",
        "replica": "a-0",
        "node": "n1",
        "state": "crash_loop",
        "restart_done": 1,
        "detail": "x" * 500,
        "ts": 2.0,
    }
    assert twice(doc, cmd) == (True, False)
    rec = freeze(doc, 1).replicas["a-0"]
    assert rec.process is Observed.CRASH_LOOP and rec.restart_done == 1
    assert len(rec.process_detail) == 200 and not rec.process_up and not rec.expected_down
    with pytest.raises(CommandError, match="does not run"):
        apply(doc, stamp({**cmd, "node": "n9"}))


def test_an_incident_opens_once_per_replica_and_keeps_its_timeline() -> None:
    doc = doc_with()
    fence = {"term": 5, "leader": "n1"}
    opened = {
        "op": "open_incident",
        "replica": "a-0",
        "model": "m",
        "want": 1,
        "reason": "a-0 DOWN",
        "ts": 10.0,
        **fence,
    }
    first, second = twice(doc, opened)
    assert first == second == "a-0#1"
    note = {
        "op": "note_incident",
        "id": first,
        "key": "wake:a-1",
        "what": "action",
        "message": "woke standby a-1",
        "ts": 10.5,
        **fence,
    }
    assert twice(doc, note) == (True, False)
    restored = {**note, "key": "restored", "what": "standby_serving", "restored": True, "ts": 12.25}
    twice(doc, restored)
    inc = freeze(doc, 1).incidents[0]
    assert inc.open and inc.mttr_s == 2.25 and inc.restored == 12.25
    closed = {**note, "key": "original_back", "what": "original_back", "closed": True, "ts": 20.0}
    twice(doc, closed)
    inc = freeze(doc, 1).incidents[0]
    assert not inc.open and inc.duration_s == 10.0 and inc.mttr_s == 2.25
    assert [s.what for s in inc.timeline] == [
        "detected",
        "action",
        "standby_serving",
        "original_back",
    ]
    # a later loss of the same replica is a new incident
    assert apply(doc, stamp({**opened, "ts": 30.0})) == "a-0#2"
    with pytest.raises(Fenced):
        apply(doc, stamp({**opened, "replica": "a-1", "term": 4}))
    kinds = [e["kind"] for e in doc["events"]]
    assert kinds.count("incident") == 4  # opened, restored, closed, opened


def test_recovery_commands_need_protocol_3_and_mark_the_state() -> None:
    doc = doc_with()
    cmd = stamp({"op": "set_desired", "replica": "a-0", "desired": "stop", "by": "x", "ts": 1})
    assert cmd["v"] == 3
    with pytest.raises(IncompatibleCommand, match="needs protocol 3"):
        apply(copy.deepcopy(doc), cmd, protocol=2)
    apply(doc, cmd)
    assert doc["protocol_high"] == 3  # an old node loading this dump halts, see raft_store


def test_a_protocol_2_state_is_the_same_whichever_code_applied_it() -> None:
    """Role changes pop recovery keys that only protocol-3 commands write: on a state
    without them, new code leaves what old code leaves."""
    doc = doc_with()
    before = copy.deepcopy(doc)
    apply(doc, {"op": "set_role", "replica": "a-1", "role": "active", "ts": 3})
    apply(before, {"op": "set_role", "replica": "a-1", "role": "active", "ts": 3})
    assert "desired" not in doc["replicas"]["a-1"] and doc == before


REPLICAS = st.sampled_from(["a-0", "a-1", "plain"])
RECOVERY_COMMANDS = st.one_of(
    st.fixed_dictionaries(
        {
            "op": st.just("set_desired"),
            "replica": REPLICAS,
            "desired": st.sampled_from(["run", "sleep", "stop"]),
            "by": st.sampled_from(["operator", "planner", ""]),
        }
    ),
    st.fixed_dictionaries(
        {"op": st.just("request_restart"), "replica": REPLICAS, "gen": st.integers(1, 5)}
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("report_process"),
            "replica": REPLICAS,
            "node": st.just("n1"),
            "state": st.sampled_from([o.value for o in Observed]),
            "restart_done": st.integers(0, 5),
        }
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("open_incident"),
            "replica": REPLICAS,
            "model": st.just("m"),
            "term": st.just(5),
            "leader": st.just("n1"),
        }
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("note_incident"),
            "id": st.sampled_from(["a-0#1", "a-1#2", "plain#1"]),
            "key": st.sampled_from(["restored", "original_back", "restart"]),
            "restored": st.booleans(),
            "closed": st.booleans(),
            "term": st.just(5),
            "leader": st.just("n1"),
        }
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("set_role"),
            "replica": REPLICAS,
            "role": st.sampled_from(["active", "standby"]),
        }
    ),
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(RECOVERY_COMMANDS, st.floats(1.0, 100.0)), max_size=12))
def test_every_recovery_command_applied_twice_is_applied_once(
    commands: list[tuple[dict[str, Any], float]],
) -> None:
    """A consensus timeout is an unknown outcome: a caller repeats the command, and the state
    must be what one application made of it."""
    doc = doc_with()
    for cmd, ts in commands:
        cmd = stamp({**cmd, "ts": ts})
        try:
            apply(doc, copy.deepcopy(cmd))
        except CommandError:
            continue
        once = copy.deepcopy(doc)
        apply(doc, copy.deepcopy(cmd))
        assert doc == once, cmd
        freeze(doc, 1)  # and the view still reads it
