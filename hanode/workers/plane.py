"""The node's side of its data-plane workers (``[router] workers`` > 1).

The node keeps consensus, health checks, the supervisor and the control API, and its own
:class:`~hanode.router.core.RouterCore` as the node's breaker record (what the cluster syncs
and status shows); it does not accept on the router port itself. :class:`WorkerPlane` starts
the workers, reserves the port for them (a socket bound with ``SO_REUSEPORT`` that never
listens, so the port stays this node's while a worker is replaced), and keeps them in step:

* every new pool snapshot goes to every worker (checked every ``PUBLISH_S``: an identity test);
* a breaker a worker opens is recorded in the node's core, announced to the cluster like a
  one-process node's open, and forced open in the other workers; opens from peers and
  operator resets applied to the node's core go to every worker;
* the live router count (admission shares) goes to every worker, each taking 1/N of the node's
  share;
* passive health rows feed the node's checkers; in-flight counts add up for status, drains and
  rolling reloads; metrics merge into one set (:mod:`hanode.metrics.merge`).

A worker that exits is started again (backoff from :mod:`hanode.policies.restart`) while the
others keep serving; its counters are kept so node totals never go down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from hanode.events import EventLog
from hanode.metrics.merge import Family, Retired
from hanode.policies.failure import FailureClass
from hanode.policies.restart import RestartPolicy, RestartState, on_failure, on_served
from hanode.pool.snapshot import PoolSnapshot, PoolView
from hanode.router.core import RouterCore, TrafficObserver
from hanode.workers.channel import Channel, ChannelClosed
from hanode.workers.messages import BreakerOp, Hello, Report
from hanode.workers.port import reuseport_socket

log = structlog.get_logger("hanode.workers")

PUBLISH_S = 0.01  # how often the node looks for a new snapshot or router count to publish
READY_WAIT_S = 30.0  # a worker's start: interpreter, imports, listening
STOP_GRACE_S = 3.0  # after its drain: then SIGKILL
SLO_PREFIX = "hanode_slo_"
SERVED_S = 10.0  # a worker up this long has served: its next exit restarts at once again
RESTARTS = RestartPolicy(backoff_base_s=0.2, backoff_max_s=10.0, crash_loop_restarts=1_000_000_000)


class WorkerStartError(Exception):
    """A worker did not come up (the node cannot serve its router port)."""


@dataclass(slots=True)
class WorkerProc:
    """One worker slot: its current process and what it last reported."""

    index: int
    process: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    pid: int = 0
    started_at: float = 0.0
    starts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: dict[str, int] = field(default_factory=dict)
    report: Report | None = None
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    restart: RestartState = field(default_factory=RestartState)
    last_exit: int | None = None

    def status(self) -> dict[str, Any]:
        report = self.report
        return {
            "index": self.index,
            "pid": self.pid or None,
            "up": self.ready.is_set(),
            "restarts": max(0, self.starts - 1),
            "last_exit": self.last_exit,
            "requests": report.requests if report else 0,
            "connections": report.connections if report else 0,
            "breakers": dict(report.breakers) if report else {},
            "inflight": sum(self.inflight.values()),
        }


class WorkerPlane:
    def __init__(
        self,
        count: int,
        hello: Hello,
        view: PoolView,
        core: RouterCore,
        observer: TrafficObserver,
        events: EventLog,
        command: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.count = count
        self.hello = hello  # the template: index, snapshot, routers and breakers set per start
        self.view = view
        self.core = core
        self.observer = observer
        self.events = events
        self.loop = asyncio.get_running_loop()
        self.command = command or (
            lambda fd: [sys.executable, "-m", "hanode.workers.worker", str(fd)]
        )
        self.workers = [WorkerProc(i) for i in range(count)]
        self.retired = Retired()
        self._reservation: socket.socket | None = None
        self._published: PoolSnapshot | None = None
        self._routers = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        core.listen_peer_breakers(self._mirror)

    # -- start ---------------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        """Reserve the port, start every worker and wait until each listens."""
        self._reservation = reuseport_socket(self.hello.host, self.hello.port)  # no listen
        port = self._reservation.getsockname()[1]
        self.hello = replace(self.hello, port=port)
        for w in self.workers:
            await self._spawn(w)
        try:
            async with asyncio.timeout(READY_WAIT_S):
                for w in self.workers:
                    await w.ready.wait()
        except TimeoutError:
            down = [w.index for w in self.workers if not w.ready.is_set()]
            raise WorkerStartError(
                f"data-plane workers {down} did not listen within {READY_WAIT_S:g} s "
                "(see their log lines)"
            ) from None
        self._published = self.view.snapshot
        self._routers = self.core.admission.routers
        self._spawn_task(self._publishing())
        log.info("workers_started", workers=self.count, port=port)
        if accept_queue_migrates() is False:
            log.warning(
                "accept_queue_not_migrated",
                detail="net.ipv4.tcp_migrate_req is 0: when a worker dies, connections waiting "
                "in its accept queue are reset; set it to 1 (docs/workers.md)",
            )
        return self.hello.host, port

    def _spawn_task(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn(self, w: WorkerProc) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            w.process = await asyncio.create_subprocess_exec(
                *self.command(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        w.pid = w.process.pid
        w.starts += 1
        w.started_at = self.loop.time()
        w.ready.clear()
        w.drained.clear()
        w.channel = channel = await Channel.over(ours)
        channel.send("hello", self._hello_for(w))
        self._spawn_task(self._serve(w, channel, w.process))

    def _hello_for(self, w: WorkerProc) -> Hello:
        now = self.loop.time()
        opens: list[BreakerOp] = []
        for name, breaker in self.core.registry.breakers().items():
            snap = breaker.snapshot(now)
            until = snap["open_until"]
            if snap["state"] == "open" and isinstance(until, float):
                opens.append(("open", name, str(snap["last_failure_class"] or ""), until))
        return replace(
            self.hello,
            index=w.index,
            snapshot=self.view.snapshot,
            routers=self.core.admission.routers,
            breakers=tuple(opens),
        )

    # -- one worker's messages -----------------------------------------------------------------
    async def _serve(
        self, w: WorkerProc, channel: Channel, process: asyncio.subprocess.Process
    ) -> None:
        try:
            while True:
                kind, payload = await channel.recv()
                self._on_message(w, kind, payload)
        except ChannelClosed:
            pass
        channel.close()
        code = await process.wait()
        self._exited(w, code)

    def _on_message(self, w: WorkerProc, kind: str, payload: Any) -> None:
        if kind == "traffic":
            record = self.observer.record
            for row in payload:
                record(*row)
        elif kind == "slo":
            record_slo = self.core.admission.record_slo
            for row in payload:
                record_slo(*row)
        elif kind == "inflight":
            w.inflight = dict(payload)
            self._sum_inflight()
        elif kind == "report":
            w.report = payload
            self._settle_breakers()
            if w.restart.failures and self.loop.time() - w.started_at >= SERVED_S:
                w.restart = on_served(w.restart)
        elif kind == "opened":
            replica, failure_class, until = payload
            self._adopt_open(w, replica, failure_class, float(until))
        elif kind == "event":
            ev_kind, subject, message, fields = payload
            self.events.add(ev_kind, subject, message, **fields)
        elif kind == "ready":
            w.ready.set()
            log.info("worker_ready", worker=w.index, pid=payload)
        elif kind == "drained":
            w.drained.set()
        else:
            log.warning("worker_unknown_message", worker=w.index, kind=kind)

    def _exited(self, w: WorkerProc, code: int) -> None:
        w.ready.clear()
        w.drained.set()
        w.channel = None
        w.process = None
        w.last_exit = code
        w.inflight = {}
        self._sum_inflight()
        if w.report is not None:
            self.retired.fold(w.report.families)
            w.report = None
        if self._closing:
            return
        decision = on_failure(RESTARTS, w.restart, self.loop.time(), random.random())
        w.restart = decision.state
        delay = decision.delay_s or 0.0
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        self.events.add(
            "worker",
            f"worker-{w.index}",
            f"data-plane worker {w.index} (pid {w.pid}) ended ({how}); restarting in {delay:.1f} s",
            pid=w.pid,
            code=code,
        )
        self._spawn_task(self._restart(w, delay))

    async def _restart(self, w: WorkerProc, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._closing:
            return
        try:
            await self._spawn(w)
        except OSError as exc:
            log.error("worker_start_failed", worker=w.index, error=repr(exc))
            self._exited(w, -1)

    # -- breakers ------------------------------------------------------------------------------
    def _adopt_open(
        self, source: WorkerProc, replica: str, failure_class: str, until: float
    ) -> None:
        """A worker opened a breaker: the node's record, the cluster, the other workers."""
        try:
            failure = FailureClass(failure_class)
        except ValueError:
            failure = FailureClass.SERVER_ERROR
        self.core.breaker(replica).force_open(self.loop.time(), failure, until)
        self.core.announce_open(replica, failure_class, until)
        self._broadcast("breaker", ("open", replica, failure_class, until), skip=source)

    def _settle_breakers(self) -> None:
        """The node's record of a breaker no worker holds open any more: closed. Its open
        period is over and every live worker has closed it again after a probe (the node
        routes nothing itself, so its own breaker would stay half-open for ever)."""
        now = self.loop.time()
        live = [w for w in self.workers if w.ready.is_set()]
        if not live or any(w.report is None for w in live):
            return
        for name, breaker in self.core.registry.breakers().items():
            if breaker.snapshot(now)["state"] != "half_open":
                continue
            if all(name not in w.report.breakers for w in live if w.report is not None):
                breaker.reset(now)

    def _mirror(self, op: str, replica: str, failure_class: str, until: float) -> None:
        """An open from a peer node or an operator reset, applied to the node's core."""
        self._broadcast("breaker", (op, replica, failure_class, until))

    # -- publishing ----------------------------------------------------------------------------
    def _broadcast(self, kind: str, payload: Any, skip: WorkerProc | None = None) -> None:
        for w in self.workers:
            channel = w.channel
            if w is skip or channel is None:
                continue
            if not channel.send(kind, payload) and channel.stuck:
                self._kill_stuck(w)

    def _kill_stuck(self, w: WorkerProc) -> None:
        if w.process is not None and w.process.returncode is None:
            log.error("worker_stuck", worker=w.index, pid=w.pid)
            with contextlib.suppress(ProcessLookupError):
                w.process.kill()

    async def _publishing(self) -> None:
        while not self._closing:
            await asyncio.sleep(PUBLISH_S)
            self.publish()

    def publish(self) -> None:
        """Send what changed since the last look: the snapshot, the live router count."""
        snap = self.view.snapshot
        if snap is not self._published:
            self._published = snap
            self._broadcast("snapshot", snap)
        routers = self.core.admission.routers
        if routers != self._routers:
            self._routers = routers
            self._broadcast("routers", routers)

    # -- reads ---------------------------------------------------------------------------------
    def _sum_inflight(self) -> None:
        """The node's core does not route here: its in-flight table holds the workers' sum,
        which is what status, metrics and rolling reloads' drains read from it."""
        total = self.core.inflight
        total.clear()
        for w in self.workers:
            for name, n in w.inflight.items():
                total[name] = total.get(name, 0) + n

    def families(self) -> list[list[Family]]:
        """Every worker's last metrics and the retired workers' totals (for the merge). SLO
        gauges come from the node's own series (fed by every worker), not the workers'."""
        out = [
            [f for f in w.report.families if not f[0].startswith(SLO_PREFIX)]
            for w in self.workers
            if w.report is not None
        ]
        out.append(self.retired.families)
        return out

    def status(self) -> list[dict[str, Any]]:
        return [w.status() for w in self.workers]

    # -- stop ----------------------------------------------------------------------------------
    async def drain(self, timeout_s: float, notice_s: float) -> None:
        """Every worker drains like a node's router (503 + close, in-flight ones finish)."""
        self._closing = True
        live = [w for w in self.workers if w.channel is not None]
        for w in live:
            assert w.channel is not None
            w.channel.send("drain", (timeout_s, notice_s))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout_s, notice_s) + STOP_GRACE_S):
                for w in live:
                    await w.drained.wait()

    @staticmethod
    async def _end(proc: asyncio.subprocess.Process, drained: bool) -> None:
        """A drained worker exits by itself; then SIGTERM (it drains briefly), then SIGKILL."""
        if drained:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S + 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def close(self) -> None:
        self._closing = True
        await asyncio.gather(
            *(self._end(w.process, w.drained.is_set()) for w in self.workers if w.process)
        )
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for w in self.workers:
            if w.channel is not None:
                w.channel.close()
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. systemd's CPUAffinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


def accept_queue_migrates() -> bool | None:
    """Whether the kernel hands a closed listener's waiting connections to another socket of
    its SO_REUSEPORT group (Linux 5.14+ ``net.ipv4.tcp_migrate_req``); None: unknown. Off, a
    worker that dies resets the few connections waiting in its accept queue."""
    try:
        with open(MIGRATE_REQ) as f:
            return f.read().strip() == "1"
    except OSError:
        return None
