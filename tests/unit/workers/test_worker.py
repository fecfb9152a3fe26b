"""A data-plane worker's glue, in process: a real front door over the published view, and the
node's end of its channel (what the node sends, what the worker tells the node)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from hanode.devtools.procs import free_port
from hanode.policies.failure import FailureClass as F
from hanode.pool.snapshot import PoolSnapshot
from hanode.workers.channel import Channel
from hanode.workers.messages import Hello, Report
from hanode.workers.worker import Worker
from tests.unit.router.fakes import state
from tests.unit.workers import support


def snapshot(version: int, *names: str) -> PoolSnapshot:
    return PoolSnapshot.build(version, {n: state(n, 9) for n in names})


def hello(**changes: Any) -> Hello:
    """Worker 1 of 2 over replicas a and b."""
    return support.hello(snapshot(1, "a", "b"), **{"index": 1, **changes})


async def drain_messages(node: Channel, wanted: str, limit: int = 50) -> list[tuple[str, Any]]:
    """Messages from the worker up to and including the first of kind ``wanted``."""
    seen = []
    for _ in range(limit):
        kind, payload = await asyncio.wait_for(node.recv(), 5)
        seen.append((kind, payload))
        if kind == wanted:
            return seen
    raise AssertionError(f"no {wanted!r} in {seen}")


def run(body: Callable[[Worker, Channel], Awaitable[None]], **changes: Any) -> None:
    async def main() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        node, theirs = await Channel.over(a), await Channel.over(b)
        worker = Worker(hello(**changes), theirs)
        try:
            await body(worker, node)
        finally:
            worker.door.close()
            node.close()
            theirs.close()

    asyncio.run(main())


def test_snapshots_routers_and_breakers_from_the_node_apply() -> None:
    async def body(w: Worker, node: Channel) -> None:
        assert w.core.admission.routers == 2  # 1 router x 2 workers share the capacity
        w.apply("snapshot", snapshot(2, "a", "b", "c"))
        assert set(w.view.snapshot.replicas) == {"a", "b", "c"}
        w.apply("routers", 3)
        assert w.core.admission.routers == 6
        now = w.loop.time()
        w.apply("breaker", ("open", "b", "gpu_oom", now + 30.0))
        assert w.core.breaker("b").snapshot(now)["state"] == "open"
        # a mirrored open is not announced back to the node as this worker's own
        msgs = await drain_messages(node, "event")
        assert all(k != "opened" for k, _ in msgs)
        _kind, (ev_kind, subject, _, fields) = msgs[-1]
        assert (ev_kind, subject, fields["replicated"], fields["worker"]) == (
            "breaker",
            "b",
            True,
            1,
        )
        w.apply("breaker", ("reset", "b", "", 0.0))
        assert w.core.breaker("b").snapshot(now)["state"] == "closed"

    run(body)


def test_the_node_knows_of_open_breakers_at_start() -> None:
    async def body(w: Worker, node: Channel) -> None:
        assert w.core.breaker("a").snapshot(w.loop.time())["state"] == "open"

    # The hello's until is in the worker's clock (monotonic, shared by the host's processes).
    import time

    run(body, breakers=(("open", "a", "server_error", time.monotonic() + 60.0),))


def test_an_open_decided_in_the_worker_goes_to_the_node() -> None:
    async def body(w: Worker, node: Channel) -> None:
        now = w.loop.time()
        breaker = w.core.breaker("a")
        w.core.breaker_changed("a", breaker.on_failure(F.CONNECTION, now, refused=True))
        msgs = await drain_messages(node, "opened")
        replica, failure_class, until = msgs[-1][1]
        assert (replica, failure_class) == ("a", "connection")
        assert until > now

    run(body)


def test_passive_rows_slo_rows_inflight_and_reports_go_to_the_node() -> None:
    async def body(w: Worker, node: Channel) -> None:
        now = w.loop.time()
        w.traffic.record("a", True, 0.02, 0.005, now, 0.001)
        w.core.inflight["a"] = 2
        w.slo_rows.append(("m", "interactive", True, 0.02))
        w.report_changes()
        w.report_changes()  # nothing new: nothing sent
        msgs = await drain_messages(node, "inflight")
        assert ("traffic", [("a", True, 0.02, 0.005, now, 0.001)]) in msgs
        assert ("slo", [("m", "interactive", True, 0.02)]) in msgs
        assert msgs[-1] == ("inflight", {"a": 2})
        w.metrics.observe_request("m", "a", 200, True, True, True, 0.02, None)
        w.report()
        _, report = (await drain_messages(node, "report"))[-1]
        assert isinstance(report, Report) and report.requests == 1
        assert any(f[0] == "hanode_requests" for f in report.families)

    run(body)


async def serving(w: Worker, node: Channel) -> asyncio.Task[int]:
    """``w`` running on a free port, once it has said ready."""
    w.hello = hello(port=free_port())
    task = asyncio.get_running_loop().create_task(w.run())
    kind, _pid = await asyncio.wait_for(node.recv(), 5)
    assert kind == "ready"
    return task


def test_drain_from_the_node_stops_the_worker_and_says_drained() -> None:
    async def body(w: Worker, node: Channel) -> None:
        task = await serving(w, node)
        node.send("drain", (1.0, 0.0))
        msgs = await drain_messages(node, "drained")
        assert msgs[-1] == ("drained", 0)
        assert await asyncio.wait_for(task, 5) == 0

    run(body)


def test_a_closed_channel_means_the_node_is_gone_and_the_worker_stops() -> None:
    async def body(w: Worker, node: Channel) -> None:
        task = await serving(w, node)
        node.close()
        assert await asyncio.wait_for(task, 10) == 0

    run(body)
