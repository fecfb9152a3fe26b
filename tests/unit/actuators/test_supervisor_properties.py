"""The supervisor under random sequences of crashes, health reports, time, desired states and
operator restarts (hypothesis, against the fake actuator): never a start while the process runs,
never more restarts in a window than the crash-loop limit, nothing started during a crash loop,
and what it reports matches the process."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.actuators.supervisor import Supervisor, SupervisorSettings
from hanode.events import EventLog
from hanode.policies.restart import RestartPolicy
from hanode.pool.lifecycle import Desired, Observed
from hanode.pool.replica import HealthLevel
from tests.unit.actuators.fakes import FakeActuator, FakeClock

POLICY = RestartPolicy(
    backoff_base_s=1.0,
    backoff_max_s=8.0,
    backoff_jitter=0.5,
    crash_loop_restarts=3,
    crash_loop_window_s=100.0,
)
SETTINGS = SupervisorSettings(start_timeout_s=30.0, health_settle_s=2.0)


class Watched(FakeActuator):
    """Counts the calls that would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.starts_while_running = 0
        self.starts: list[float] = []
        self.clock: FakeClock | None = None

    async def start(self) -> None:
        if self.running:
            self.starts_while_running += 1
        elif self.fail_start is None and self.clock is not None:
            self.starts.append(self.clock.t)
        await super().start()


step = st.one_of(
    st.just(("crash",)),
    st.tuples(st.just("health"), st.sampled_from(list(HealthLevel))),
    st.tuples(st.just("advance"), st.floats(0.0, 10.0)),
    st.tuples(st.just("desired"), st.sampled_from(list(Desired))),
    st.just(("reconcile",)),
    st.just(("operator",)),
    st.tuples(st.just("exit_at_once"), st.booleans()),
)
# Mostly a broken replica and time passing, so crash loops are reached, not only begun.
steps_strategy = st.lists(
    st.one_of(
        step,
        st.just(("crash",)),
        st.tuples(st.just("advance"), st.floats(0.5, 10.0)),
        st.just(("reconcile",)),
    ),
    min_size=20,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(steps=steps_strategy, broken=st.booleans(), rands=st.randoms(use_true_random=False))
def test_supervisor_invariants(
    steps: list[tuple[object, ...]], broken: bool, rands: object
) -> None:
    async def run() -> None:
        act, clock = Watched(), FakeClock()
        act.clock = clock
        act.exit_at_once = broken  # a start command that exits at once, until a step says not
        sup = Supervisor(
            {"r0": act},
            EventLog(),
            SETTINGS,
            POLICY,
            clock=clock,
            rand=rands.random,  # type: ignore[attr-defined]
        )
        decisions: list[list[float]] = [[]]  # restart decisions, per run between clears
        for s in steps:
            kind = s[0]
            if kind == "crash":
                act.crash()
            elif kind == "health":
                sup.health("r0", s[1])  # type: ignore[arg-type]
            elif kind == "advance":
                clock.advance(s[1])  # type: ignore[arg-type]
            elif kind == "desired":
                sup.set_desired("r0", s[1])  # type: ignore[arg-type]
            elif kind == "operator":
                await sup.restart("r0")
                decisions.append([])  # cleared: the count starts again
            elif kind == "exit_at_once":
                act.exit_at_once = bool(s[1])
            starts_before = len(act.starts)
            before = sup.observed()["r0"].observed
            looped = before is Observed.CRASH_LOOP
            report = await sup.reconcile("r0")
            if report.observed is Observed.BACKOFF and before is not Observed.BACKOFF:
                decisions[-1].append(clock.t)
            # Nothing is started while in a crash loop (only an operator restart starts).
            if looped and kind != "operator":
                assert len(act.starts) == starts_before
            # What it reports matches the process.
            if report.observed in (Observed.RUNNING, Observed.SLEEPING):
                assert act.running
            if report.observed in (Observed.STOPPED, Observed.CRASH_LOOP, Observed.BACKOFF):
                assert not act.running
            if sup.desired("r0") is Desired.STOP:
                assert not act.running
        assert act.starts_while_running == 0
        # Never more restart decisions inside one crash-loop window than the limit.
        window = POLICY.crash_loop_window_s
        for run_ in decisions:
            for t in run_:
                assert sum(1 for u in run_ if t <= u < t + window) <= POLICY.crash_loop_restarts

    asyncio.run(run())
