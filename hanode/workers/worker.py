"""A data-plane worker: one child process serving the node's router port.

It accepts on its own ``SO_REUSEPORT`` socket bound to the router port (the kernel spreads new
connections over the workers) and routes exactly like a one-process node: the same front door,
relays, breakers, retries and admission, over the pool snapshot the node publishes. What the
node needs back goes over the channel: passive health rows for its checkers, in-flight counts,
breaker opens (the node mirrors them to the other workers and to the cluster), events, and
metrics. It stops when the node says ``drain`` (a graceful stop), on SIGTERM, or when the
channel closes (the node is gone), each time draining like a node's router does.

Run by the node as ``python -m hanode.workers.worker FD``; not a command for people.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from typing import Any

import structlog

from hanode.events import Event, EventLog
from hanode.http.server import HttpServer
from hanode.logs import configure_logging
from hanode.metrics.merge import families_of
from hanode.metrics.registry import NodeMetrics
from hanode.policies.failure import FailureClass
from hanode.pool.snapshot import PoolSnapshot
from hanode.router.frontdoor import FrontDoor
from hanode.runtime import run
from hanode.security.tls import TlsFiles, server_ssl_context
from hanode.service import drain_router
from hanode.workers.channel import Channel, ChannelClosed
from hanode.workers.messages import BreakerOp, Hello, Report, TrafficRow
from hanode.workers.port import reuseport_socket

log = structlog.get_logger("hanode.workers")

HELLO_WAIT_S = 30.0
BACKLOG = 1024  # as a one-process node's router
ORPHAN_DRAIN_S = 5.0  # the node is gone: finish what is in flight for at most this long


class PublishedView:
    """The pool view of a worker: the last snapshot the node sent (a PoolView)."""

    def __init__(self, snapshot: PoolSnapshot) -> None:
        self.snapshot = snapshot


class TrafficRelay:
    """Passive health rows (the relay's TrafficObserver) batched to the node's checkers."""

    def __init__(self) -> None:
        self.rows: list[TrafficRow] = []

    def record(
        self,
        replica: str,
        ok: bool,
        latency_s: float,
        ttft_s: float | None,
        now: float,
        tpot_s: float | None = None,
    ) -> None:
        self.rows.append((replica, ok, latency_s, ttft_s, now, tpot_s))

    def take(self) -> list[TrafficRow]:
        rows, self.rows = self.rows, []
        return rows


class Worker:
    """The worker's state: its front door over the published view, and the channel."""

    def __init__(self, hello: Hello, channel: Channel) -> None:
        self.hello = hello
        self.channel = channel
        self.loop = asyncio.get_running_loop()
        self.view = PublishedView(hello.snapshot)
        self.events = EventLog()
        self.events.subscribe(self._forward_event)
        self.metrics = NodeMetrics()
        self.traffic = TrafficRelay()
        self.door = FrontDoor(self.view, hello.settings, self.metrics, self.traffic, self.events)
        self.core = self.door.core
        self.core.listen_breaker_opens(self._opened)
        self.core.admission.set_routers(hello.routers * hello.workers)
        self.slo_rows: list[tuple[str, str, bool, float]] = []
        self.core.admission.slo_sink = self.slo_rows.append
        for op in hello.breakers:
            self.apply_breaker(op)
        self.server: HttpServer | None = None
        self._sent_inflight: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._drain: tuple[float, float] | None = None

    # -- node -> worker ------------------------------------------------------------------------
    def apply(self, kind: str, payload: Any) -> None:
        if kind == "snapshot":
            self.view.snapshot = payload
            self.core.pool_changed()
        elif kind == "breaker":
            self.apply_breaker(payload)
        elif kind == "routers":
            self.core.admission.set_routers(int(payload) * self.hello.workers)
        elif kind == "drain":
            timeout_s, notice_s = payload
            self.stop(float(timeout_s), float(notice_s))
        else:
            log.warning("worker_unknown_message", kind=kind)

    def apply_breaker(self, op: BreakerOp) -> None:
        what, replica, failure_class, until = op
        breaker = self.core.breaker(replica)
        now = self.loop.time()
        if what == "open":
            try:
                failure = FailureClass(failure_class)
            except ValueError:
                failure = FailureClass.SERVER_ERROR
            transitions = breaker.force_open(now, failure, until)
        else:
            transitions = breaker.reset(now)
        self.core.breaker_changed(replica, transitions, local=False)

    def stop(self, timeout_s: float, notice_s: float) -> None:
        if self._drain is None:
            self._drain = (timeout_s, notice_s)
            self._stop.set()

    # -- worker -> node ------------------------------------------------------------------------
    def _opened(self, replica: str, failure_class: str, until: float) -> None:
        self.channel.send("opened", (replica, failure_class, until))

    def _forward_event(self, event: Event) -> None:
        fields = {**event.fields, "worker": self.hello.index}
        self.channel.send("event", (event.kind, event.subject, event.message, fields))

    def report_changes(self) -> None:
        """Passive rows and in-flight counts, when there is something new."""
        rows = self.traffic.take()
        if rows:
            self.channel.send("traffic", rows)
        if self.slo_rows:
            self.channel.send("slo", self.slo_rows[:])
            self.slo_rows.clear()
        inflight = {k: v for k, v in self.core.inflight.items() if v}
        if inflight != self._sent_inflight:
            self._sent_inflight = inflight
            self.channel.send("inflight", inflight)

    def report(self) -> None:
        now = self.loop.time()
        breakers = {}
        for name, breaker in self.door.breakers.items():
            state = breaker.snapshot(now)["state"]
            if state != "closed":
                breakers[name] = str(state)
        server = self.server
        self.channel.send(
            "report",
            Report(
                families_of(self.metrics.registry),
                breakers,
                int(sum(self.metrics.requests.values.values())),
                len(server.connections) if server is not None else 0,
            ),
        )

    async def _reporting(self) -> None:
        every = self.hello.report_every_s
        ticks_per_report = max(1, round(self.hello.metrics_every_s / every))
        tick = 0
        while True:
            await asyncio.sleep(every)
            self.report_changes()
            tick += 1
            if tick % ticks_per_report == 0:
                self.report()

    async def _listening(self) -> None:
        while True:
            try:
                kind, payload = await self.channel.recv()
            except ChannelClosed as exc:
                log.warning("worker_orphaned", worker=self.hello.index, reason=str(exc))
                self.channel.close()
                self.stop(ORPHAN_DRAIN_S, 0.0)
                return
            self.apply(kind, payload)

    # -- the run -------------------------------------------------------------------------------
    async def run(self) -> int:
        hello = self.hello
        tls = None
        if hello.tls_cert_file is not None and hello.tls_key_file is not None:
            tls = server_ssl_context(TlsFiles(hello.tls_cert_file, hello.tls_key_file))
        self.server = server = HttpServer(
            self.door.handle, hello.limits, lambda exc: log.error("handler_error", error=repr(exc))
        )
        await server.listen_socket(reuseport_socket(hello.host, hello.port, BACKLOG), tls)
        self.loop.add_signal_handler(signal.SIGTERM, self.stop, ORPHAN_DRAIN_S, 0.0)
        self.channel.send("ready", os.getpid())
        tasks = [
            self.loop.create_task(self._reporting()),
            self.loop.create_task(self._listening()),
        ]
        await self._stop.wait()
        timeout_s, notice_s = self._drain or (0.0, 0.0)
        busy = await drain_router(self.door, server, timeout_s, notice_s)
        for task in tasks:
            task.cancel()
        self.report_changes()
        self.report()
        self.channel.send("drained", busy)
        await self.channel.drain()
        await server.close()
        self.door.close()
        self.channel.close()
        return 0


async def serve(fd: int) -> int:
    channel = await Channel.over(socket.socket(fileno=fd))
    try:
        kind, hello = await asyncio.wait_for(channel.recv(), HELLO_WAIT_S)
    except (ChannelClosed, TimeoutError) as exc:
        print(f"hanode worker: no hello from the node: {exc!r}", file=sys.stderr)
        return 2
    if kind != "hello" or not isinstance(hello, Hello):
        print(f"hanode worker: expected hello, got {kind!r}", file=sys.stderr)
        return 2
    configure_logging(hello.log_level, json=hello.log_json)
    structlog.contextvars.bind_contextvars(worker=hello.index)
    return await Worker(hello, channel).run()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m hanode.workers.worker FD (started by hanode run)", file=sys.stderr)
        return 2
    # Ctrl-C in a terminal reaches the whole process group: the node drains its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return run(serve(int(argv[0])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
