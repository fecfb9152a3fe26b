"""The planner's recovery: hot standbys first, then sleeping, then stopped; back to the
standby mode after the hold; expected-down replicas are not lost capacity; incidents."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.cluster.planner import could_serve
from hanode.pool.lifecycle import Desired
from hanode.pool.replica import Role
from tests.unit.cluster.recovery_world import World


def ops(world: World) -> list[tuple[str, str, str]]:
    return [
        (c["op"], str(c.get("replica", c.get("id", ""))), str(c.get("desired", c.get("role", ""))))
        for c in world.decisions
        if c["op"] in ("set_desired", "set_role")
    ]


def test_a_sleeping_standby_is_woken_then_promoted_then_put_back_to_sleep() -> None:
    w = World()
    w.add("a-0")
    w.add("a-1", role="standby", standby="sleep")
    assert w.round() == [] and w.view.replicas["a-1"].desired is Desired.SLEEP
    w.crash("a-0")
    w.round()  # wakes a-1 and opens the incident
    w.round()  # a-1 is ready: promoted
    assert w.serving() == ["a-1"]
    assert ops(w) == [("set_desired", "a-1", "run"), ("set_role", "a-1", "active")]
    w.heal("a-0")
    for _ in range(12):  # the hold passes: a-1 is demoted, and a new role brings its sleep
        w.round()
    rec = w.view.replicas["a-1"]
    assert rec.role is Role.STANDBY and rec.desired is Desired.SLEEP
    assert w.serving() == ["a-0"]
    (inc,) = w.view.incidents
    assert [s.what for s in inc.timeline] == [
        "detected",
        "action",
        "action",
        "action",
        "standby_serving",
        "original_back",
    ]
    assert not inc.open and inc.mttr_s == 2.0  # detected at t, a-1 serving two rounds later
    assert {s.message for s in inc.timeline} >= {"woke standby a-1", "promoted a-1"}


def test_a_hot_standby_is_promoted_before_any_is_woken_and_sleep_before_stopped() -> None:
    w = World()
    w.add("a-0")
    w.add("s-stop", role="standby", standby="stopped")
    w.add("s-sleep", role="standby", standby="sleep")
    w.add("s-hot", role="standby", standby="hot")
    w.crash("a-0")
    w.round()
    assert ops(w) == [("set_role", "s-hot", "active")]
    w.crash("s-hot")
    w.round()
    assert ops(w)[-1] == ("set_desired", "s-sleep", "run")
    w.crash("s-sleep")
    for _ in range(3):
        w.round()
    assert ("set_desired", "s-stop", "run") in ops(w)


def test_a_woken_standby_that_was_not_needed_goes_back_after_the_hold() -> None:
    w = World()
    w.add("a-0")
    w.add("a-1", role="standby", standby="sleep")
    w.crash("a-0")
    w.leader_round()  # a-1 woken...
    w.heal("a-0")  # ...but the original is back before a-1 is ready
    w.now += 1
    for _ in range(9):
        w.round()
    assert w.view.replicas["a-1"].desired is Desired.RUN  # still within the hold
    for _ in range(3):
        w.round()
    rec = w.view.replicas["a-1"]
    assert rec.desired is Desired.SLEEP and rec.role is Role.STANDBY


def test_an_operators_sleep_is_expected_down_and_never_overridden() -> None:
    w = World(min_active=1)
    w.add("a-0")
    w.add("a-1")
    w.add("s", role="standby", standby="sleep")
    w.write({"op": "set_desired", "replica": "a-1", "desired": "sleep", "by": "operator"})
    for _ in range(5):
        w.round()
    assert w.view.incidents == ()  # asleep on purpose: no incident
    assert w.view.replicas["a-1"].desired is Desired.SLEEP
    assert w.view.replicas["s"].desired is Desired.SLEEP  # a-0 is enough: nothing woken
    w.write({"op": "set_desired", "replica": "s", "desired": "sleep", "by": "operator"})
    w.crash("a-0")
    for _ in range(3):
        w.round()
    assert w.view.replicas["s"].desired is Desired.SLEEP  # the operator's word holds
    (inc,) = w.view.incidents
    assert inc.replica == "a-0" and inc.open and inc.restored is None


def test_no_actuator_means_nothing_is_woken_and_no_desired_state_written() -> None:
    w = World()
    w.add("a-0", actuated=False)
    w.add("s", role="standby", standby="sleep", actuated=False)
    w.crash("a-0")
    for _ in range(3):
        w.round()
    # a standby without an actuator is a hot standby hanode only routes to: promoted
    assert ops(w) == [("set_role", "s", "active")]


MODES = st.sampled_from(["hot", "sleep", "stopped"])


@settings(max_examples=150, deadline=None)
@given(
    actives=st.integers(1, 3),
    standbys=st.lists(MODES, min_size=0, max_size=3),
    min_active=st.integers(1, 3),
    crashes=st.lists(st.integers(0, 5), max_size=4),
)
def test_recovery_invariants(
    actives: int, standbys: list[str], min_active: int, crashes: list[int]
) -> None:
    w = World(min_active=min_active)
    names = [f"a-{i}" for i in range(actives)]
    for name in names:
        w.add(name)
    for i, mode in enumerate(standbys):
        w.add(f"s-{i}", role="standby", standby=mode)
        names.append(f"s-{i}")
    for _ in range(2):
        w.round()
    for c in crashes:
        w.crash(names[c % len(names)])
    for _ in range(8):
        before = w.view
        out = w.round()
        serving = sum(
            1 for r in before.replicas.values() if r.role is Role.ACTIVE and r.may_serve()
        )
        ready = sum(
            1
            for r in before.replicas.values()
            if r.role is Role.STANDBY and could_serve(r, frozenset())
        )
        for cmd in out:
            if cmd["op"] == "set_desired" and cmd["desired"] == "run":
                # woken only while serving and ready (hot) standbys cannot make min_active
                assert serving + ready < min_active, (serving, ready, cmd)
                assert before.replicas[cmd["replica"]].role is Role.STANDBY
            if cmd["op"] == "open_incident":
                rec = before.replicas[cmd["replica"]]
                assert rec.role is Role.ACTIVE and not rec.expected_down
    # capacity comes back whenever enough replicas are healthy
    healthy = [n for n in names if n not in w.crashed]
    if len(healthy) >= min_active:
        assert len(w.serving()) >= min_active, (w.serving(), healthy, w.decisions)
    for inc in w.view.incidents:
        assert not inc.replica.startswith("s-") or inc.replica in {
            c["replica"] for c in w.decisions if c["op"] == "set_role"
        }
        if inc.restored is not None:
            assert inc.mttr_s is not None and 0 <= inc.mttr_s <= 10
        if inc.open:  # an open incident's replica is really lost (not asleep on purpose)
            assert inc.replica in w.crashed or not w.view.replicas[inc.replica].may_serve()


def test_a_cold_start_does_not_wake_the_standbys() -> None:
    w = World()
    w.add("a-0")
    w.add("s", role="standby", standby="sleep")
    w.report("a-0", "starting", 0)  # loading for the first time
    w.leader_round()
    assert w.decisions == []
    w.report("a-0", "running", 3)
    w.leader_round()
    w.report("a-0", "starting", 0)  # it served: now a restart after a failure
    w.leader_round()
    assert [c["op"] for c in w.decisions] == ["set_desired", "open_incident"]
