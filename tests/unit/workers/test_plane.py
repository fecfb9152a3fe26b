"""WorkerPlane (the node's side of its workers) against stand-in worker processes
(fake_worker.py): start, breaker mirroring both ways, snapshots, in-flight sums, merged
metrics, a killed worker's restart with its counters kept, drain and close."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hanode.events import EventLog
from hanode.metrics.merge import merge
from hanode.metrics.registry import NodeMetrics
from hanode.policies.failure import FailureClass as F
from hanode.router.core import RouterCore, RouterSettings
from hanode.workers.plane import WorkerPlane
from tests.unit.router.fakes import FakeObserver, FakeView, state
from tests.unit.workers.support import hello


def fake_worker(fd: int) -> list[str]:
    return [sys.executable, "-m", "tests.unit.workers.fake_worker", str(fd)]


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for ``check()`` (the plane's reader tasks run meanwhile); bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def echoes(events: EventLog, worker: int, text: str) -> list[str]:
    return [
        e.message
        for e in events.recent(1000)
        if e.kind == "echo" and e.subject == f"worker-{worker}" and text in e.message
    ]


@dataclass
class Rig:
    """The node's side: its core, pool view, event log and observer, and the plane."""

    plane: WorkerPlane
    core: RouterCore
    view: FakeView
    events: EventLog
    obs: FakeObserver
    announced: list[tuple[str, str]] = field(default_factory=list)  # opens told the cluster


def run(body: Callable[[Rig], Awaitable[None]]) -> None:
    async def main() -> None:
        view = FakeView()
        view.publish(state("r", 9), state("s", 9))
        events = EventLog()
        observer = FakeObserver()
        core = RouterCore(view, RouterSettings(), NodeMetrics(), observer, events)
        plane = WorkerPlane(
            2, hello(view.snapshot), view, core, observer, events, command=fake_worker
        )
        rig = Rig(plane, core, view, events, observer)
        core.listen_breaker_opens(lambda r, c, u: rig.announced.append((r, c)))
        try:
            await plane.start()
            await body(rig)
        finally:
            await plane.close()
            core.close()

    asyncio.run(main())


def test_breakers_snapshots_inflight_and_metrics_cross_the_plane() -> None:
    async def body(rig: Rig) -> None:
        plane, core, view, events, obs = rig.plane, rig.core, rig.view, rig.events, rig.obs
        now = core.loop.time()
        # worker 0 opened r: the node's record, then worker 1 (not worker 0 again)
        await until(lambda: bool(echoes(events, 1, "breaker ('open', 'r', 'gpu_oom'")), "mirror")
        assert core.breaker("r").snapshot(now)["state"] == "open"
        assert not echoes(events, 0, "breaker")
        # the in-flight tries add up in the node's table; passive rows reach the observer
        await until(lambda: core.inflight == {"r": 5}, "in-flight sum")
        await until(lambda: len(obs.of("r", True)) == 2, "passive rows")
        # one counter across the workers
        await until(lambda: sum(1 for f in plane.families() if f) == 2, "reports")
        merged = merge(plane.families())
        assert [
            s[2] for f in merged if f[0] == "fake_served" for s in f[4] if s[0].endswith("_total")
        ] == [30.0]
        # a new snapshot goes to both
        view.publish(state("r", 9), state("s", 9), state("t", 9))
        for i in (0, 1):
            await until(lambda i=i: bool(echoes(events, i, "snapshot")), f"snapshot to {i}")
        # an open from a peer node and an operator reset go to both
        core.peer_opened("s", F.SERVER_ERROR, now + 20.0)
        core.reset_breaker("s")
        for i in (0, 1):
            await until(lambda i=i: bool(echoes(events, i, "('open', 's', 'server_error'")), "peer")
            await until(lambda i=i: bool(echoes(events, i, "('reset', 's'")), "reset")
        # the worker's open went to the cluster once, as this node's; peers' opens never
        assert rig.announced == [("r", "gpu_oom")]

    run(body)


def test_a_killed_worker_is_restarted_with_the_open_breakers_and_its_counters_kept() -> None:
    async def body(rig: Rig) -> None:
        plane, core, events = rig.plane, rig.core, rig.events
        await until(lambda: sum(1 for f in plane.families() if f) == 2, "reports")
        await until(lambda: core.breaker("r").snapshot(core.loop.time())["state"] == "open", "r")
        victim = plane.workers[1].pid
        os.kill(victim, signal.SIGKILL)
        await until(
            lambda: plane.workers[1].pid != victim and plane.workers[1].ready.is_set(), "restart"
        )
        status = plane.status()[1]
        assert status["restarts"] == 1 and status["last_exit"] == -signal.SIGKILL
        assert any(e.kind == "worker" and str(victim) in e.message for e in events.recent(100))
        # the new worker was told of the open breaker in its hello
        hellos = [
            e.message for e in events.recent(1000) if e.kind == "hello" and e.subject == "worker-1"
        ]
        assert len(hellos) == 2 and "'r'" in hellos[-1], hellos
        # counters: the dead worker's 20 are kept, the new one reports 20 more
        await until(lambda: plane.workers[1].report is not None, "new report")
        merged = merge(plane.families())
        total = [
            s[2] for f in merged if f[0] == "fake_served" for s in f[4] if s[0].endswith("_total")
        ]
        assert total == [50.0]
        assert core.inflight == {"r": 5}  # the dead worker's tries gone, the new one's counted

    run(body)


def test_drain_reaches_every_worker_and_close_leaves_none_running() -> None:
    async def body(rig: Rig) -> None:
        plane, events = rig.plane, rig.events
        procs = [w.process for w in plane.workers]
        await plane.drain(1.0, 0.0)
        assert all(w.drained.is_set() for w in plane.workers)
        for i in (0, 1):
            assert echoes(events, i, "drain (1.0, 0.0)")
        await plane.close()
        assert all(p is not None and p.returncode == 0 for p in procs)
        assert not any("restarting" in e.message for e in events.recent(100) if e.kind == "worker")

    run(body)


def test_the_nodes_breaker_closes_once_no_worker_holds_it_open() -> None:
    async def body(rig: Rig) -> None:
        plane, core, view = rig.plane, rig.core, rig.view
        await until(lambda: sum(1 for f in plane.families() if f) == 2, "reports")
        breaker = core.breaker("s")
        breaker.force_open(core.loop.time(), F.TIMEOUT, core.loop.time() + 0.05)
        await until(lambda: breaker.snapshot(core.loop.time())["state"] == "half_open", "expiry")
        # The node routes nothing: only the workers' reports (none holds s open) close it.
        view.publish(state("r", 9), state("s", 9), state("u", 9))
        await until(lambda: breaker.snapshot(core.loop.time())["state"] == "closed", "settled")

    run(body)
