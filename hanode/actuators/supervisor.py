"""The node's replica supervisor: keeps each replica with an actuator where it is wanted.

Per replica it reconciles the process toward a :class:`~hanode.pool.lifecycle.Desired` state
(RUN, SLEEP, STOP), and while RUN restarts a replica whose process exited or whose health
failed (L1 down, or L2 failing ``fall`` times, as the checker reports it) after it had served,
or that did not serve within ``start_timeout_s`` of its start. Restarts follow
:mod:`hanode.policies.restart`: exponential backoff with jitter, and a crash loop stops them
until :meth:`Supervisor.restart`. What it sees is :class:`ReplicaReport`, pushed to
subscribers so the cluster side can report it.

One task per replica; every action is awaited on the event loop (subprocesses and HTTP through
asyncio, never blocking it). ``reconcile`` is one step, so tests drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from hanode.actuators.base import Actuator, ActuatorError, ProcessStatus
from hanode.events import EventLog
from hanode.policies.restart import (
    RestartPolicy,
    RestartState,
    cleared,
    on_failure,
    on_served,
)
from hanode.pool.lifecycle import Desired, Observed
from hanode.pool.replica import HealthLevel

log = structlog.get_logger("hanode.supervisor")


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    poll_interval_s: float = 0.5  # how often each process is looked at
    start_timeout_s: float = 600.0  # a (re)started replica that has not served by then failed
    stop_grace_s: float = 10.0  # SIGTERM, then SIGKILL after this (command actuator)
    engine_timeout_s: float = 120.0  # one sleep, wake or warm-up call
    # Health reports count for a (re)started replica only from this long after its start: the
    # checker may still report what it saw of the process before (the daemon derives it
    # from [health] interval, fall and timeout).
    health_settle_s: float = 5.0


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    """What the supervisor last saw of one replica, for status and the cluster."""

    name: str
    observed: Observed = Observed.UNKNOWN
    desired: Desired = Desired.RUN
    pid: int | None = None
    restarts: int = 0  # restarts inside the crash-loop window
    next_start_in_s: float | None = None  # while in backoff
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "observed": self.observed.value,
            "desired": self.desired.value,
            "pid": self.pid,
            "restarts": self.restarts,
            "next_start_in_s": (
                None if self.next_start_in_s is None else round(self.next_start_in_s, 2)
            ),
            "detail": self.detail,
        }


@dataclass(slots=True)
class _Replica:
    name: str
    actuator: Actuator
    desired: Desired
    report: ReplicaReport
    restart: RestartState = field(default_factory=RestartState)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    adopted: bool = False  # adopt() ran
    started_at: float | None = None  # when the current run started (or was first seen)
    served: bool = False  # the current run served (passed L2) since started_at
    health: HealthLevel | None = None  # last report that counts (after the settle time)
    next_start_at: float | None = None  # backoff: start again at this time
    sleeping: bool = False  # what we asked the engine for (SGLang cannot be asked back)
    asked_engine: bool = False  # asked once whether it sleeps (an adopted one may)


Listener = Callable[[str, ReplicaReport], None]


class Supervisor:
    """See the module's docstring. Public methods are for the daemon and the cluster side."""

    def __init__(
        self,
        actuators: Mapping[str, Actuator],
        events: EventLog,
        settings: SupervisorSettings | None = None,
        policy: RestartPolicy | None = None,
        clock: Callable[[], float] | None = None,
        rand: Callable[[], float] = random.random,
        state_dir: Path | None = None,
    ) -> None:
        """``state_dir``: where a crash loop is remembered (NAME.crash_loop), so that a daemon
        restart does not start a crash-looping replica again; None keeps it in memory only."""
        self.state_dir = state_dir
        self.settings = settings or SupervisorSettings()
        self.policy = policy or RestartPolicy()
        self.events = events
        self._clock = clock
        self._rand = rand
        self._replicas = {
            name: _Replica(name, act, Desired.RUN, ReplicaReport(name))
            for name, act in actuators.items()
        }
        self._listeners: list[Listener] = []
        self._began_listeners: list[Callable[[str], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    # -- public ------------------------------------------------------------------------------
    def names(self) -> tuple[str, ...]:
        return tuple(self._replicas)

    def desired(self, name: str) -> Desired:
        return self._replicas[name].desired

    def set_desired(self, name: str, desired: Desired) -> None:
        """Idempotent: what this replica's process should be; reconciled at once."""
        r = self._replicas[name]
        if r.desired is desired:
            return
        r.desired = desired
        if desired is not Desired.RUN:
            r.next_start_at = None  # a backoff is for getting it running
        self._publish(r, replace(r.report, desired=desired))
        r.wakeup.set()

    def observed(self) -> dict[str, ReplicaReport]:
        return {name: r.report for name, r in self._replicas.items()}

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_began(self, listener: Callable[[str], None]) -> None:
        """``listener(name)`` whenever a new run of a replica begins: started, restarted,
        woken, or first seen running (e.g. so its checker relearns its memory baseline)."""
        self._began_listeners.append(listener)

    def health(self, name: str, level: HealthLevel) -> None:
        """The checkers' hook: the replica's debounced health level, after every check."""
        r = self._replicas.get(name)
        if r is None or r.started_at is None:
            return
        if self._now() - r.started_at < self.settings.health_settle_s:
            return  # may still be about the process before this one
        previous, r.health = r.health, level
        if previous is not level:
            r.wakeup.set()

    async def restart(self, name: str) -> None:
        """Clear a crash loop and the backoff and restart now (``hanodectl restart NAME``)."""
        r = self._replicas[name]
        async with r.lock:
            await self._adopt_once(r)  # a process left by an earlier daemon is this replica's
            r.restart = cleared()
            r.next_start_at = None
            self._remember_loop(name, None)
            self.events.add("restart", name, "restart asked by an operator", reason="operator")
            try:
                await r.actuator.restart()
            except ActuatorError as exc:
                self._failed(r, f"restart failed: {exc}")
                return
            self._began(r)
            self._set(r, Observed.STARTING, "restarted by an operator")
        r.wakeup.set()

    async def sleep(self, name: str, timeout_s: float | None = None) -> bool:
        """Desired SLEEP, then wait until it is observed asleep (False: not within the time)."""
        self.set_desired(name, Desired.SLEEP)
        return await self._until(name, {Observed.SLEEPING}, timeout_s)

    async def wake(self, name: str, timeout_s: float | None = None) -> bool:
        """Desired RUN, then wait until it is awake and warmed up (STARTING or RUNNING)."""
        self.set_desired(name, Desired.RUN)
        return await self._until(name, {Observed.STARTING, Observed.RUNNING}, timeout_s)

    async def _until(self, name: str, wanted: set[Observed], timeout_s: float | None) -> bool:
        if self._replicas[name].report.observed in wanted:
            return True
        done = asyncio.Event()

        def check(n: str, report: ReplicaReport) -> None:
            if n == name and report.observed in wanted:
                done.set()

        self._listeners.append(check)
        try:
            limit = timeout_s if timeout_s is not None else self.settings.engine_timeout_s * 2
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), limit)
        finally:
            self._listeners.remove(check)
        return done.is_set()

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        for r in self._replicas.values():
            self._tasks.append(asyncio.create_task(self._loop(r), name=f"supervise-{r.name}"))

    async def close(self) -> None:
        """Stop supervising; the replicas' processes keep running (the next daemon adopts)."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self, r: _Replica) -> None:
        while not self._stop.is_set():
            r.wakeup.clear()  # before the step: a change during it wakes the next one at once
            try:
                await self.reconcile(r.name)
            except Exception:  # an actuator bug must not end supervision for good
                log.exception("reconcile_failed", replica=r.name)
            wait = self.settings.poll_interval_s
            if r.next_start_at is not None:
                wait = max(0.0, min(wait, r.next_start_at - self._now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(r.wakeup.wait(), wait)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # -- one step ----------------------------------------------------------------------------
    async def reconcile(self, name: str) -> ReplicaReport:
        """Look at the replica once and take at most one action toward its desired state."""
        r = self._replicas[name]
        async with r.lock:
            await self._adopt_once(r)
            status = await r.actuator.observe()
            try:
                await self._step(r, status)
            except ActuatorError as exc:
                self._set(r, r.report.observed, str(exc), status.pid)
                log.warning("actuator_failed", replica=name, error=str(exc))
        return r.report

    async def _adopt_once(self, r: _Replica) -> None:
        if not r.adopted:
            r.adopted = True
            found = await r.actuator.adopt()
            if found:
                self.events.add("process", r.name, found, action="adopt")
            why = self._remembered_loop(r.name)
            if why is not None:
                r.restart = replace(r.restart, crash_loop=True)
                self._set(r, Observed.CRASH_LOOP, f"crash loop (before a daemon restart): {why}")

    # A crash loop outlives the daemon: it waits for an operator, not for the next start.
    def _loop_marker(self, name: str) -> Path | None:
        return None if self.state_dir is None else self.state_dir / f"{name}.crash_loop"

    def _remembered_loop(self, name: str) -> str | None:
        marker = self._loop_marker(name)
        try:
            return None if marker is None else marker.read_text(encoding="utf-8").strip()
        except OSError:
            return None

    def _remember_loop(self, name: str, why: str | None) -> None:
        marker = self._loop_marker(name)
        if marker is None:
            return
        try:
            if why is None:
                marker.unlink(missing_ok=True)
            else:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.write_text(why[:500] + "\n", encoding="utf-8")
        except OSError as exc:
            log.warning("crash_loop_marker", replica=name, error=str(exc))

    async def _step(self, r: _Replica, st: ProcessStatus) -> None:
        now = self._now()
        if r.desired is Desired.STOP:
            if st.running:
                await r.actuator.stop()
                self.events.add("process", r.name, "stopped", action="stop")
            r.started_at, r.sleeping = None, False
            self._set(r, Observed.STOPPED, "stopped as desired")
            return
        if r.restart.crash_loop:
            if st.running:
                await r.actuator.stop()
            kept = r.report.observed is Observed.CRASH_LOOP and r.report.detail
            self._set(r, Observed.CRASH_LOOP, kept or "crash loop: waiting for hanodectl restart")
            return
        if not st.running:
            await self._not_running(r, st, now)
            return
        r.next_start_at = None  # running (it may have been started by someone else meanwhile)
        if r.started_at is None:  # running, and we did not start it: adopted or left so
            self._began(r, now)
        sleeping = await self._sleeping(r)
        if r.desired is Desired.SLEEP:
            await self._toward_sleep(r, st, sleeping)
            return
        if sleeping:
            self.events.add("process", r.name, "waking", action="wake")
            await r.actuator.wake()
            r.sleeping = False
            self._began(r)
            self._set(r, Observed.STARTING, "woken and warmed up; waiting for L2", st.pid)
            return
        await self._check_running(r, st, now)

    async def _sleeping(self, r: _Replica) -> bool:
        """Whether the engine sleeps: asked when it matters (desired SLEEP, asleep by our
        doing, or the first look at a process we may have adopted), else what we did."""
        if not r.actuator.can_sleep:
            return False
        if r.desired is Desired.SLEEP or r.sleeping or not r.asked_engine:
            r.asked_engine = True
            answer = await r.actuator.is_sleeping()
            if answer is not None:
                r.sleeping = answer
        return r.sleeping

    async def _not_running(self, r: _Replica, st: ProcessStatus, now: float) -> None:
        if r.next_start_at is None and r.started_at is not None:
            self._failure(r, now, st.detail or "process exited")
            return
        if r.next_start_at is not None and now < r.next_start_at:
            self._set(r, Observed.BACKOFF, r.report.detail, next_in=r.next_start_at - now)
            return
        restarting = r.next_start_at is not None
        r.next_start_at = None
        try:
            await r.actuator.start()
        except ActuatorError as exc:  # e.g. the program is missing: back off like a crash
            self._failure(r, now, f"start failed: {exc}")
            return
        self._began(r)
        if restarting:
            self.events.add(
                "restart", r.name, "restarted", reason="backoff over", attempt=r.restart.failures
            )
        else:
            self.events.add("process", r.name, "started", action="start")
        self._set(r, Observed.STARTING, "waiting for L2")

    async def _toward_sleep(self, r: _Replica, st: ProcessStatus, sleeping: bool) -> None:
        if sleeping:
            self._set(r, Observed.SLEEPING, "engine asleep", st.pid)
            return
        if not r.actuator.can_sleep:
            self._set(r, Observed.RUNNING, "this engine has no sleep mode", st.pid)
            return
        if r.health is None or r.health is HealthLevel.DOWN:
            self._set(r, Observed.STARTING, "waiting for the engine before it sleeps", st.pid)
            return
        await r.actuator.sleep()
        r.sleeping, r.served, r.health = True, False, None
        self.events.add("process", r.name, "asleep", action="sleep")
        self._set(r, Observed.SLEEPING, "engine asleep", st.pid)

    async def _check_running(self, r: _Replica, st: ProcessStatus, now: float) -> None:
        level = r.health
        if level is not None and level.serving:
            if not r.served:
                r.served = True
                r.restart = on_served(r.restart)
            self._set(r, Observed.RUNNING, "", st.pid)
            return
        if r.served and level is not None:  # it served, and now fails
            layer = "L1" if level is HealthLevel.DOWN else "L2"
            await r.actuator.stop()
            self._failure(r, now, f"{layer} failed after serving")
            return
        started = r.started_at if r.started_at is not None else now
        if now - started >= self.settings.start_timeout_s:
            await r.actuator.stop()
            self._failure(r, now, f"did not pass L2 within {self.settings.start_timeout_s:g}s")
            return
        self._set(r, Observed.STARTING, "waiting for L2", st.pid)

    # -- bookkeeping -------------------------------------------------------------------------
    def _began(self, r: _Replica, now: float | None = None) -> None:
        r.started_at = self._now() if now is None else now
        r.served, r.health = False, None
        for listener in list(self._began_listeners):
            listener(r.name)

    def _failure(self, r: _Replica, now: float, why: str) -> None:
        r.started_at, r.served, r.health, r.sleeping = None, False, None, False
        decision = on_failure(self.policy, r.restart, now, self._rand())
        r.restart = decision.state
        if decision.delay_s is None:
            r.next_start_at = None
            self._remember_loop(r.name, why)
            self.events.add(
                "crash_loop",
                r.name,
                f"crash loop: {len(decision.state.restarts)} restarts within "
                f"{self.policy.crash_loop_window_s:g}s; last: {why}; waiting for "
                f"hanodectl restart {r.name}",
                restarts=len(decision.state.restarts),
                window_s=self.policy.crash_loop_window_s,
            )
            self._set(r, Observed.CRASH_LOOP, f"crash loop; last: {why}")
            return
        r.next_start_at = now + decision.delay_s
        self.events.add(
            "backoff",
            r.name,
            f"{why}; restarting in {decision.delay_s:.2f}s",
            delay_s=round(decision.delay_s, 3),
            reason=why,
            attempt=decision.state.failures,
        )
        self._set(r, Observed.BACKOFF, why, next_in=decision.delay_s)

    def _failed(self, r: _Replica, why: str) -> None:
        self._set(r, r.report.observed, why)

    def _set(
        self,
        r: _Replica,
        observed: Observed,
        detail: str,
        pid: int | None = None,
        next_in: float | None = None,
    ) -> None:
        report = ReplicaReport(
            r.name,
            observed,
            r.desired,
            pid,
            len(r.restart.restarts),
            next_in,
            detail,
        )
        self._publish(r, report)

    def _publish(self, r: _Replica, report: ReplicaReport) -> None:
        old = r.report
        r.report = report
        if (old.observed, old.detail, old.desired) != (
            report.observed,
            report.detail,
            report.desired,
        ):
            for listener in list(self._listeners):
                listener(r.name, report)
