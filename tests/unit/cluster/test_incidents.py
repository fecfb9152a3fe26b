"""The incident timeline: opened for lost capacity only, steps keyed, MTTR and duration."""

from __future__ import annotations

from tests.unit.cluster.recovery_world import World


def whats(w: World) -> list[str]:
    (inc,) = w.view.incidents
    return [s.what + (f":{s.key}" if s.what == "action" else "") for s in inc.timeline]


def test_a_restart_by_the_node_with_spare_actives_restores_when_the_original_is_back() -> None:
    w = World(min_active=1)
    w.add("a-0")
    w.add("a-1")
    w.round()
    w.crash("a-0")
    w.round()
    w.round()
    (inc,) = w.view.incidents
    assert inc.want == 2 and inc.restored is None  # a-1 alone is not the capacity before
    w.heal("a-0")
    w.round()
    (inc,) = w.view.incidents
    assert not inc.open and inc.mttr_s == inc.duration_s == 2.0
    assert whats(w) == ["detected", "action:restart", "original_back"]


def test_a_crash_loop_is_a_step_and_the_incident_stays_open_until_restart() -> None:
    w = World()
    w.add("a-0")
    w.add("s", role="standby", standby="hot")
    w.round()
    w.crash("a-0")
    w.round()
    w.report("a-0", "crash_loop", 0)
    w.round()
    w.round()
    (inc,) = w.view.incidents
    assert inc.open and inc.restored is not None  # the hot standby serves
    assert whats(w)[:4] == [
        "detected",
        "action:promote:s",
        "action:crash_loop",
        "standby_serving",
    ]
    assert any("hanodectl restart a-0" in s.message for s in inc.timeline)


def test_draining_or_sleeping_a_lost_replica_closes_its_incident_and_opens_none() -> None:
    w = World()
    w.add("a-0")
    w.add("a-1")
    w.round()
    w.crash("a-0")
    w.round()
    w.write({"op": "set_admin", "replicas": ["a-0"], "admin": "drained", "by": "op"})
    w.round()
    (inc,) = w.view.incidents
    assert not inc.open and inc.timeline[-1].message == "a-0 drained by an operator"
    w.write({"op": "set_desired", "replica": "a-1", "desired": "sleep", "by": "operator"})
    for _ in range(3):
        w.round()
    assert len(w.view.incidents) == 1  # a-1 asleep on purpose: no incident


def test_a_lost_node_opens_incidents_for_its_active_replicas() -> None:
    w = World()
    w.add("a-0")
    w.round()
    w.write({"op": "register_node", "name": "n1", "raft": "h:1", "protocol": 3})
    w.write({"op": "node_lost", "name": "n1", "silent_s": 7.0, "term": 1, "leader": "n1"})
    w.leader_round()
    (inc,) = w.view.incidents
    assert inc.timeline[0].message == "a-0 lost with node n1"


def test_a_replica_that_has_not_served_since_its_start_raises_no_incident() -> None:
    w = World()
    w.add("a-0")
    w.add("s", role="standby", standby="stopped")
    w.crash("a-0")  # down before the leader ever saw it serve: loading, not lost
    for _ in range(3):
        w.round()
    assert w.view.incidents == ()
    w.heal("a-0")
    w.round()
    w.crash("a-0")
    w.round()
    assert len(w.view.incidents) == 1
