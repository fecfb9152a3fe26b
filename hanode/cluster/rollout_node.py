"""A node's part in rolling reloads: report its router's in-flight requests on each draining
replica (the leader waits until every router's count is 0), and carry out engine reloads of
its own replicas (``reload = "engine"``) once per generation.

Only a generation number comes from the replicated state; the call made is the local
config's (``actuators.engine_reload``). In-flight counts change without a new view, so while
a replica drains the node looks again every ``poll_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import structlog

from hanode.cluster.document import ROLLOUT_PROTOCOL, Command
from hanode.cluster.view import ClusterView

log = structlog.get_logger("hanode.cluster.rollout")

Send = Callable[[Command, Callable[[], None]], None]  # (command, on_failure)
Reload = Callable[[], Awaitable[None]]


class RolloutNode:
    def __init__(
        self,
        node: str,
        send: Send,
        inflight: Callable[[], Mapping[str, int]],
        protocol: Callable[[ClusterView], int],
        reloads: Mapping[str, Reload] | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.node = node
        self._send = send
        self._inflight = inflight
        self._protocol = protocol
        self._reloads = dict(reloads or {})
        self._poll_s = poll_s
        self._view: ClusterView | None = None
        self._sent: dict[tuple[str, str], int] = {}  # (rollout id, replica) -> count sent
        self._asked: dict[str, int] = {}  # engine reload generations started
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def on_view(self, view: ClusterView) -> None:
        self._view = view
        if self._protocol(view) < ROLLOUT_PROTOCOL:
            return
        self._report(view)
        self._engine_reloads(view)

    def _draining(self, view: ClusterView) -> list[tuple[str, str, str, int | None]]:
        out = []
        for ro in view.rollouts.values():
            if not ro.running:
                continue
            for st in ro.replicas:
                if st.step == "draining":
                    out.append((ro.model, ro.id, st.name, st.inflight.get(self.node)))
        return out

    def _report(self, view: ClusterView) -> None:
        draining = self._draining(view)
        counts = self._inflight()
        keep: set[tuple[str, str]] = set()
        for model, rid, name, recorded in draining:
            key = (rid, name)
            keep.add(key)
            count = max(0, int(counts.get(name, 0)))
            if recorded == count:
                self._sent[key] = count
                continue
            if self._sent.get(key) == count:
                continue  # on its way
            self._sent[key] = count

            def failed(key: tuple[str, str] = key) -> None:
                self._sent.pop(key, None)

            self._send(
                {
                    "op": "report_inflight",
                    "model": model,
                    "id": rid,
                    "replica": name,
                    "node": self.node,
                    "inflight": count,
                },
                failed,
            )
        for key in [k for k in self._sent if k not in keep]:
            del self._sent[key]
        if draining and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._poll_s, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self._view is not None:
            self._report(self._view)

    def _engine_reloads(self, view: ClusterView) -> None:
        for name, reload in self._reloads.items():
            rec = view.replicas.get(name)
            if rec is None or rec.spec.node != self.node:
                continue
            done = max(rec.reload_done, self._asked.get(name, 0))
            if rec.reload_gen > done:
                self._asked[name] = rec.reload_gen
                self._spawn(self._reload(name, reload, rec.reload_gen))

    async def _reload(self, name: str, reload: Reload, gen: int) -> None:
        log.info("engine_reload", replica=name, gen=gen)
        try:
            await reload()
        except Exception as exc:  # reported by not passing L2: the rollout then fails
            log.warning("engine_reload_failed", replica=name, gen=gen, error=str(exc))
            return

        def failed() -> None:  # asked again on the next view
            self._asked.pop(name, None)

        self._send({"op": "report_reload", "replica": name, "node": self.node, "done": gen}, failed)

    def set_reloads(self, reloads: Mapping[str, Reload]) -> None:
        self._reloads = dict(reloads)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
