"""The supervisor against a fake actuator and a fake clock: start, restart with backoff after an
exit or a health failure, crash loop and its clearing, sleep/wake/stop, adoption, reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from hanode.actuators.supervisor import ReplicaReport, Supervisor, SupervisorSettings
from hanode.events import EventLog
from hanode.policies.restart import RestartPolicy
from hanode.pool.lifecycle import Desired, Observed
from hanode.pool.replica import HealthLevel
from tests.unit.actuators.fakes import FakeActuator, FakeClock, run_async

SETTINGS = SupervisorSettings(start_timeout_s=60.0, health_settle_s=2.0)
POLICY = RestartPolicy(
    backoff_base_s=1.0,
    backoff_max_s=8.0,
    backoff_jitter=0.0,
    crash_loop_restarts=3,
    crash_loop_window_s=600.0,
)


def rig(
    act: FakeActuator | None = None,
) -> tuple[Supervisor, FakeActuator, FakeClock, EventLog]:
    act = act or FakeActuator()
    clock, events = FakeClock(), EventLog()
    sup = Supervisor({"r0": act}, events, SETTINGS, POLICY, clock=clock, rand=lambda: 0.0)
    return sup, act, clock, events


def kinds(events: EventLog) -> list[str]:
    return [e.kind for e in events.recent(1000)]


async def serve(
    sup: Supervisor, clock: FakeClock, level: HealthLevel = HealthLevel.HEALTHY
) -> None:
    """Let the settle time pass and report ``level`` from the checker."""
    clock.advance(SETTINGS.health_settle_s)
    sup.health("r0", level)
    await sup.reconcile("r0")


@run_async
async def test_starts_a_replica_desired_run_and_reports_it_running_once_it_serves() -> None:
    sup, act, clock, events = rig()
    report = await sup.reconcile("r0")
    assert act.calls == ["adopt", "start"]
    assert report.observed is Observed.STARTING
    assert (await sup.reconcile("r0")).observed is Observed.STARTING  # no L2 yet
    await serve(sup, clock)
    assert sup.observed()["r0"].observed is Observed.RUNNING
    assert sup.observed()["r0"].pid == act.pid
    assert act.calls.count("start") == 1
    assert kinds(events) == ["process"]


@run_async
async def test_health_reports_inside_the_settle_time_are_ignored() -> None:
    sup, _act, _clock, _ = rig()
    await sup.reconcile("r0")
    sup.health("r0", HealthLevel.HEALTHY)  # may be about the process before this one
    assert (await sup.reconcile("r0")).observed is Observed.STARTING


@run_async
async def test_an_exited_process_is_restarted_after_a_backoff() -> None:
    sup, act, clock, events = rig()
    await sup.reconcile("r0")
    await serve(sup, clock)
    act.crash()
    report = await sup.reconcile("r0")
    assert report.observed is Observed.BACKOFF
    assert report.next_start_in_s == 1.0
    assert "exited" in report.detail
    clock.advance(0.5)
    assert (await sup.reconcile("r0")).observed is Observed.BACKOFF
    assert act.calls.count("start") == 1
    clock.advance(0.5)
    assert (await sup.reconcile("r0")).observed is Observed.STARTING
    assert act.calls.count("start") == 2
    assert kinds(events) == ["process", "backoff", "restart"]
    await serve(sup, clock)
    assert sup.observed()["r0"].observed is Observed.RUNNING


@run_async
async def test_exiting_at_once_backs_off_with_growing_delays_then_stops_as_a_crash_loop() -> None:
    act = FakeActuator()
    act.exit_at_once = True
    sup, act, clock, events = rig(act)
    await sup.reconcile("r0")  # first start
    delays = []
    for _ in range(10):
        report = await sup.reconcile("r0")
        if report.observed is Observed.CRASH_LOOP:
            break
        assert report.observed is Observed.BACKOFF
        assert report.next_start_in_s is not None
        delays.append(report.next_start_in_s)
        clock.advance(report.next_start_in_s)
        await sup.reconcile("r0")  # starts again; it exits at once
    assert delays == [1.0, 2.0, 4.0]
    report = sup.observed()["r0"]
    assert report.observed is Observed.CRASH_LOOP and report.restarts == 3
    crash = [e for e in events.recent(100) if e.kind == "crash_loop"]
    assert len(crash) == 1 and "hanodectl restart r0" in crash[0].message
    starts = act.calls.count("start")
    clock.advance(3600.0)
    assert (await sup.reconcile("r0")).observed is Observed.CRASH_LOOP
    assert act.calls.count("start") == starts  # waits for an operator
    act.exit_at_once = False
    await sup.restart("r0")
    assert act.calls.count("start") == starts + 1
    assert sup.observed()["r0"].observed is Observed.STARTING
    assert sup.observed()["r0"].restarts == 0
    await serve(sup, clock)
    assert sup.observed()["r0"].observed is Observed.RUNNING


@run_async
async def test_l1_failure_after_serving_restarts_but_not_while_still_loading() -> None:
    sup, act, clock, _events = rig()
    await sup.reconcile("r0")
    await serve(sup, clock, HealthLevel.DOWN)  # loading: refuses; not a failure yet
    assert sup.observed()["r0"].observed is Observed.STARTING
    assert "stop" not in act.calls
    sup.health("r0", HealthLevel.HEALTHY)
    await sup.reconcile("r0")
    sup.health("r0", HealthLevel.DOWN)  # L1 failed `fall` times after serving
    report = await sup.reconcile("r0")
    assert report.observed is Observed.BACKOFF and "L1 failed" in report.detail
    assert act.calls[-1] == "stop"
    clock.advance(1.0)
    assert (await sup.reconcile("r0")).observed is Observed.STARTING


@run_async
async def test_l2_failing_after_serving_restarts_too() -> None:
    sup, _act, clock, _ = rig()
    await sup.reconcile("r0")
    await serve(sup, clock)
    sup.health("r0", HealthLevel.UNREADY)
    report = await sup.reconcile("r0")
    assert report.observed is Observed.BACKOFF and "L2 failed" in report.detail


@run_async
async def test_a_replica_that_never_serves_is_restarted_after_the_start_timeout() -> None:
    sup, _act, clock, _ = rig()
    await sup.reconcile("r0")
    clock.advance(59.0)
    assert (await sup.reconcile("r0")).observed is Observed.STARTING
    clock.advance(1.0)
    report = await sup.reconcile("r0")
    assert report.observed is Observed.BACKOFF and "within 60s" in report.detail


@run_async
async def test_serving_again_resets_the_backoff() -> None:
    sup, act, clock, _ = rig()
    await sup.reconcile("r0")
    for _ in range(2):
        await serve(sup, clock)
        act.crash()
        report = await sup.reconcile("r0")
        assert report.next_start_in_s == 1.0  # served in between: from the base again
        clock.advance(1.0)
        await sup.reconcile("r0")


@run_async
async def test_a_failing_start_backs_off_instead_of_retrying_at_once() -> None:
    act = FakeActuator()
    act.fail_start = "cannot run vllm: No such file or directory"
    sup, act, _clock, _events = rig(act)
    report = await sup.reconcile("r0")
    assert report.observed is Observed.BACKOFF and "No such file" in report.detail
    assert (await sup.reconcile("r0")).observed is Observed.BACKOFF
    assert act.calls.count("start") == 1


@run_async
async def test_sleep_waits_for_the_engine_then_sleeps_and_wakes_on_run() -> None:
    sup, act, clock, events = rig()
    sup.set_desired("r0", Desired.SLEEP)
    await sup.reconcile("r0")  # starts it: a sleeping standby is a loaded process
    assert act.calls[-1] == "start"
    assert (await sup.reconcile("r0")).observed is Observed.STARTING
    await serve(sup, clock, HealthLevel.UNREADY)  # answers L1: the engine can take /sleep
    assert act.calls[-1] == "sleep"
    assert sup.observed()["r0"].observed is Observed.SLEEPING
    sup.health("r0", HealthLevel.UNREADY)  # asleep, L2 cannot pass: no restart
    clock.advance(3600.0)
    assert (await sup.reconcile("r0")).observed is Observed.SLEEPING
    assert act.calls.count("start") == 1
    sup.set_desired("r0", Desired.RUN)
    assert (await sup.reconcile("r0")).observed is Observed.STARTING
    assert act.calls[-1] == "wake"
    await serve(sup, clock)
    assert sup.observed()["r0"].observed is Observed.RUNNING
    assert [e.fields.get("action") for e in events.recent(100)] == ["start", "sleep", "wake"]


@run_async
async def test_an_engine_without_sleep_mode_keeps_running() -> None:
    sup, act, clock, _ = rig(FakeActuator(can_sleep=False))
    sup.set_desired("r0", Desired.SLEEP)
    await sup.reconcile("r0")
    await serve(sup, clock)
    report = sup.observed()["r0"]
    assert report.observed is Observed.RUNNING and "no sleep mode" in report.detail
    assert "sleep" not in act.calls


@run_async
async def test_stop_stops_and_run_starts_again() -> None:
    sup, act, clock, _ = rig()
    await sup.reconcile("r0")
    sup.set_desired("r0", Desired.STOP)
    assert (await sup.reconcile("r0")).observed is Observed.STOPPED
    assert not act.running
    clock.advance(3600.0)
    assert (await sup.reconcile("r0")).observed is Observed.STOPPED
    sup.set_desired("r0", Desired.RUN)
    assert (await sup.reconcile("r0")).observed is Observed.STARTING
    assert act.running and act.calls.count("start") == 2


@run_async
async def test_set_desired_is_idempotent_and_subscribers_see_changes() -> None:
    sup, _act, _clock, _ = rig()
    seen: list[tuple[str, Observed, Desired]] = []

    def listener(name: str, report: ReplicaReport) -> None:
        seen.append((name, report.observed, report.desired))

    sup.subscribe(listener)
    sup.set_desired("r0", Desired.RUN)  # already RUN: nothing happens
    assert seen == []
    await sup.reconcile("r0")
    await sup.reconcile("r0")  # nothing changed: no second notice
    assert seen == [("r0", Observed.STARTING, Desired.RUN)]
    sup.set_desired("r0", Desired.STOP)
    assert seen[-1] == ("r0", Observed.STARTING, Desired.STOP)
    with pytest.raises(KeyError):
        sup.set_desired("nope", Desired.RUN)
    assert sup.observed()["r0"].as_dict()["desired"] == "stop"


@run_async
async def test_an_adopted_process_is_not_started_again() -> None:
    act = FakeActuator(adopt_says="adopted pid 101, left running by an earlier daemon")
    act.running = True
    sup, act, clock, events = rig(act)
    assert (await sup.reconcile("r0")).observed is Observed.STARTING
    assert "start" not in act.calls
    assert [e.fields.get("action") for e in events.recent(10)] == ["adopt"]
    await serve(sup, clock)
    assert sup.observed()["r0"].observed is Observed.RUNNING


@run_async
async def test_began_listeners_hear_each_new_run() -> None:
    sup, act, clock, _ = rig()
    began: list[str] = []
    sup.on_began(began.append)
    await sup.reconcile("r0")  # started
    await serve(sup, clock)
    sup.set_desired("r0", Desired.SLEEP)
    await sup.reconcile("r0")
    sup.set_desired("r0", Desired.RUN)
    await sup.reconcile("r0")  # woken
    act.crash()
    await sup.reconcile("r0")  # backoff: no run yet
    clock.advance(1.0)
    await sup.reconcile("r0")  # restarted
    assert began == ["r0", "r0", "r0"]


@run_async
async def test_the_engine_is_asked_whether_it_sleeps_only_when_it_matters() -> None:
    sup, act, clock, _ = rig()
    await sup.reconcile("r0")
    await serve(sup, clock)
    asked = act.calls.count("is_sleeping")
    assert asked == 1  # the first look at the running process (it may have been adopted asleep)
    for _ in range(5):
        await sup.reconcile("r0")
    assert act.calls.count("is_sleeping") == asked  # awake and wanted so: not asked again


@run_async
async def test_an_adopted_sleeping_engine_is_seen_asleep_and_woken_when_run() -> None:
    act = FakeActuator(adopt_says="adopted pid 101, left running by an earlier daemon")
    act.running, act.sleeping = True, True
    sup, act, _clock, _ = rig(act)
    sup.set_desired("r0", Desired.SLEEP)
    assert (await sup.reconcile("r0")).observed is Observed.SLEEPING
    assert "sleep" not in act.calls and "start" not in act.calls
    sup.set_desired("r0", Desired.RUN)
    assert (await sup.reconcile("r0")).observed is Observed.STARTING
    assert act.calls[-1] == "wake"


@run_async
async def test_an_operator_restart_before_the_first_look_adopts_first() -> None:
    act = FakeActuator(adopt_says="adopted pid 101, left running by an earlier daemon")
    act.running = True
    sup, act, _clock, events = rig(act)
    await sup.restart("r0")
    assert act.calls[:3] == ["adopt", "stop", "start"]
    assert [e.fields.get("action") for e in events.recent(10) if e.kind == "process"] == ["adopt"]


@run_async
async def test_a_crash_loop_outlives_the_daemon_until_an_operator_clears_it(
    tmp_path: Path,
) -> None:
    act = FakeActuator()
    act.exit_at_once = True
    clock = FakeClock()
    sup = Supervisor({"r0": act}, EventLog(), SETTINGS, POLICY, clock, lambda: 0.0, tmp_path)
    for _ in range(20):
        report = await sup.reconcile("r0")
        if report.observed is Observed.CRASH_LOOP:
            break
        clock.advance(10.0)
    assert (tmp_path / "r0.crash_loop").read_text().startswith("exited")
    # The daemon restarts: the new supervisor starts nothing.
    again = FakeActuator()
    sup2 = Supervisor({"r0": again}, EventLog(), SETTINGS, POLICY, clock, lambda: 0.0, tmp_path)
    report = await sup2.reconcile("r0")
    assert report.observed is Observed.CRASH_LOOP and "before a daemon restart" in report.detail
    assert "start" not in again.calls
    await sup2.restart("r0")
    assert again.calls.count("start") == 1
    assert not (tmp_path / "r0.crash_loop").exists()
