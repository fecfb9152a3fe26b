"""The node's side of recovery in a cluster: carry the replicated desired state and restart
requests of this node's own replicas to its supervisor, and report what it observes.

Only enum values and counters come from the replicated state (``Desired``, the restart
generation); what runs is the supervisor's, from the local config. Reports are written on
change, and again whenever the replicated state says something else than what the supervisor
sees (a lost write, a resync), so they converge without a heartbeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog

from hanode.cluster.document import RECOVERY_PROTOCOL, Command
from hanode.cluster.view import ClusterView
from hanode.pool.lifecycle import Desired, Observed

log = structlog.get_logger("hanode.cluster.reconcile")

Send = Callable[[Command, Callable[[], None]], None]  # (command, on_failure)


class ProcessReport(Protocol):
    """What a supervisor says of one replica (``actuators.supervisor.ReplicaReport``)."""

    @property
    def observed(self) -> Observed: ...

    @property
    def detail(self) -> str: ...


class NodeActuation(Protocol):
    """The part of the node's supervisor the cluster uses (see docs/recovery.md)."""

    def names(self) -> tuple[str, ...]: ...

    def set_desired(self, name: str, desired: Desired) -> None: ...

    async def restart(self, name: str) -> None: ...

    def observed(self) -> Mapping[str, Any]: ...

    def subscribe(self, listener: Callable[[str, Any], None]) -> None: ...


class Reconciler:
    def __init__(
        self,
        node: str,
        actuation: NodeActuation,
        send: Send,
        protocol: Callable[[ClusterView], int],
    ) -> None:
        self.node = node
        self.actuation = actuation
        self._send = send
        self._protocol = protocol  # the version the cluster can apply now
        self._names = set(actuation.names())
        self._desired: dict[str, Desired] = {}
        self._done: dict[str, int] = {}  # the last restart generation carried out
        self._asked: dict[str, int] = {}  # the last one started
        self._inflight: dict[str, tuple[str, int, str]] = {}
        self._view: ClusterView | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        actuation.subscribe(self._changed)

    def on_view(self, view: ClusterView) -> None:
        self._view = view
        recovery = self._protocol(view) >= RECOVERY_PROTOCOL
        for name in sorted(self._names):
            rec = view.replicas.get(name)
            if rec is None or rec.spec.node != self.node:
                continue
            if self._desired.get(name) is not rec.desired:
                self._desired[name] = rec.desired
                try:
                    self.actuation.set_desired(name, rec.desired)
                except KeyError:
                    continue
            if not recovery:
                continue
            done = self._done.setdefault(name, rec.restart_done)
            if rec.restart_gen > max(done, self._asked.get(name, 0)):
                # Reported done only once the restart was carried out: a rolling reload
                # takes "done and RUNNING" for the new process having passed L2.
                self._asked[name] = rec.restart_gen
                log.info("restart_requested", replica=name, gen=rec.restart_gen)
                self._spawn(self._restart(name, rec.restart_gen))
            self._report(name, view)

    async def _restart(self, name: str, gen: int) -> None:
        try:
            await self.actuation.restart(name)
        finally:
            self._done[name] = max(self._done.get(name, 0), gen)
            if self._view is not None:
                self._report(name, self._view)

    def _changed(self, name: str, report: Any) -> None:
        if self._view is not None and name in self._names:
            self._report(name, self._view)

    def _wanted(self, name: str) -> tuple[str, int, str] | None:
        report = self.actuation.observed().get(name)
        if report is None:
            return None
        state = Observed(report.observed).value
        return state, self._done.get(name, 0), str(getattr(report, "detail", ""))[:200]

    def _report(self, name: str, view: ClusterView) -> None:
        if self._protocol(view) < RECOVERY_PROTOCOL:
            return
        rec = view.replicas.get(name)
        wanted = self._wanted(name)
        if rec is None or wanted is None or name not in self._done:
            return
        have = (rec.process.value, rec.restart_done, rec.process_detail)
        if have == wanted:
            self._inflight.pop(name, None)
            return
        if self._inflight.get(name) == wanted:
            return
        self._inflight[name] = wanted

        def failed() -> None:
            if self._inflight.get(name) == wanted:
                del self._inflight[name]

        state, done, detail = wanted
        self._send(
            {
                "op": "report_process",
                "replica": name,
                "node": self.node,
                "state": state,
                "restart_done": done,
                "detail": detail,
            },
            failed,
        )

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("restart_failed", error=repr(task.exception()))

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
