"""The relay's try loop against fake replicas on 127.0.0.1, a fake pool view and a fake
responder: failover before the first byte and never after, the deadline, the client leaving,
tries failed over when their replica is found dead, free failovers that the retry budget does
not refuse, and whose latency each try is charged to."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from hanode.policies.breaker import BreakerConfig, BreakerState
from hanode.policies.failure import FailureClass as F
from hanode.policies.retry import RetryPolicy
from hanode.pool.replica import AdminState, HealthLevel
from tests.unit.router.fakes import (
    FakeResponder,
    hold,
    reset,
    respond,
    rig,
    stream_then_hold,
)

WAIT = 5.0  # bound on every wait; the tests finish in milliseconds when the code is right


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30.0))


async def finished(responder: FakeResponder) -> FakeResponder:
    return await asyncio.wait_for(asyncio.shield(responder.finished), WAIT)


def served_by(responder: FakeResponder) -> str | None:
    value = responder.header(b"x-hanode-replica")
    return value.decode() if value is not None else None


# -- failover ------------------------------------------------------------------------------------
def test_failover_before_the_first_byte() -> None:
    async def main() -> None:
        async with rig(breaker=BreakerConfig(consecutive_failures=1)) as r:
            r.a.script.append(respond(500, b'{"error": {"message": "boom"}}'))
            resp = await finished(r.send())
            assert (resp.status, served_by(resp)) == (200, "b")
            assert b"hello" in resp.body
            assert (len(r.a.seen), len(r.b.seen)) == (1, 1)
            assert r.door.core.breaker("a").state is BreakerState.OPEN
            assert r.opened and r.opened[0][:2] == ("a", "server_error")  # about the replica
            assert r.metric("hanode_retries_total", model="m", failure_class="server_error") == 1
            assert r.door.inflight == {"a": 0, "b": 0}

    run(main)


def test_no_retry_after_the_first_byte_with_continuation_off() -> None:
    async def main() -> None:
        async with rig(stream_continuation=False) as r:
            r.a.script.append(stream_then_hold())
            resp = r.send(stream=True)
            await asyncio.wait_for(resp.first_body, WAIT)
            call = await r.a.next_call()
            call.writer.transport.abort()  # the replica dies in the middle of the stream
            await finished(resp)
            assert resp.aborted and resp.status == 200
            assert b'"error"' in resp.body and b"stream_continuation" in resp.body
            assert b"[DONE]" not in resp.body
            assert r.b.seen == []
            assert (
                r.metric("hanode_upstream_failures_total", replica="a", failure_class="connection")
                == 1
            )

    run(main)


def test_reset_before_the_first_byte_is_retried_and_charged() -> None:
    async def main() -> None:
        async with rig(retry_budget_ratio=0.0, retry_budget_min_per_s=0.0) as r:
            r.a.script.append(reset())
            resp = await finished(r.send())
            # The replica took the request and dropped it: a charged retry, which an empty
            # budget refuses (a request that crashes replicas must not crash them all).
            assert resp.status == 503
            assert r.metric("hanode_retry_budget_exhausted_total", model="m") == 1
            assert r.b.seen == []

    run(main)


def test_charged_tries_stop_at_max_attempts() -> None:
    async def main() -> None:
        retry = RetryPolicy(max_attempts=2, per_try_timeout_s=30.0, cap_backoff_s=0.0)
        async with rig(retry=retry) as r:
            r.a.default = r.b.default = respond(500, b'{"error": {"message": "boom"}}')
            resp = await finished(r.send())
            assert resp.status == 503 and b"boom" in resp.body
            assert len(r.a.seen) + len(r.b.seen) == 2

    run(main)


def test_per_try_timeout_then_the_request_deadline() -> None:
    async def main() -> None:
        retry = RetryPolicy(per_try_timeout_s=0.2, cap_backoff_s=0.0)
        async with rig(retry=retry) as r:
            r.a.default = r.b.default = hold()
            t0 = r.door.loop.time()
            resp = await finished(r.send(timeout_s=0.35))
            assert resp.status == 504
            assert r.door.loop.time() - t0 < 2.0
            assert (len(r.a.seen), len(r.b.seen)) == (1, 1)
            for call in r.a.seen + r.b.seen:  # both tries were abandoned, not left waiting
                await asyncio.wait_for(call.gone, WAIT)
            assert (
                r.metric("hanode_upstream_failures_total", replica="a", failure_class="timeout")
                == 1
            )

    run(main)


def test_client_gone_releases_the_probe_slot() -> None:
    async def main() -> None:
        async with rig(breaker=BreakerConfig(open_base_s=1.0)) as r:
            door = r.door
            now = door.loop.time()
            breaker = door.core.breaker("a")
            door.core.breaker_changed(
                "a", breaker.on_failure(F.CONNECTION, now - 100.0, refused=True)
            )
            r.a.script.append(hold())
            resp = r.send()
            call = await r.a.next_call()  # the probe reached a
            assert breaker.snapshot(door.loop.time())["probes_in_flight"] == 1
            resp.client_leaves()
            await asyncio.wait_for(call.gone, WAIT)  # the upstream try was abandoned
            assert breaker.snapshot(door.loop.time())["probes_in_flight"] == 0
            assert door.inflight["a"] == 0 and door.core.tries_on("a") == 0
            resp2 = await finished(r.send())  # a may be probed again at once
            assert (resp2.status, served_by(resp2)) == (200, "a")
            assert breaker.state is BreakerState.CLOSED

    run(main)


# -- replicas found dead ---------------------------------------------------------------------------
def test_mass_failover_when_the_breaker_opens_on_another_request() -> None:
    """Six requests wait on a; a new connection to a is refused, so its breaker opens: all six
    fail over to b at once. With no retry budget at all and a single attempt allowed, every
    request still succeeds: failovers from a dead replica are free."""

    async def main() -> None:
        retry = RetryPolicy(max_attempts=1, per_try_timeout_s=30.0)
        async with rig(retry=retry, retry_budget_ratio=0.0, retry_budget_min_per_s=0.0) as r:
            r.a.default = hold()
            waiting = [r.send() for _ in range(6)]
            for _ in waiting:
                await r.a.next_call()
            assert r.door.core.tries_on("a") == 6
            r.a.stop_listening()
            late = r.send()  # gets a fresh connection: refused
            done = [await finished(x) for x in [*waiting, late]]
            assert [(x.status, served_by(x)) for x in done] == [(200, "b")] * 7
            for call in r.a.seen:
                await asyncio.wait_for(call.gone, WAIT)
            assert r.door.core.breaker("a").state is BreakerState.OPEN
            assert [(o[0], o[1]) for o in r.opened] == [("a", "connection")]
            m = r.metric
            assert (
                m("hanode_upstream_failures_total", replica="a", failure_class="replica_dead") == 6
            )
            assert (
                m("hanode_upstream_failures_total", replica="a", failure_class="connect_refused")
                == 1
            )
            assert m("hanode_retry_budget_exhausted_total", model="m") == 0
            assert r.door.core.tries_on("a") == 0 and r.door.inflight["a"] == 0

    run(main)


def test_pool_taking_a_replica_out_fails_its_tries_over() -> None:
    """The health checker (or the cluster's node lease) says a is DOWN while three requests
    wait on it: the front door's watch notices the new snapshot and fails them over."""

    async def main() -> None:
        async with rig(retry=RetryPolicy(max_attempts=1, per_try_timeout_s=30.0)) as r:
            r.a.default = hold()
            waiting = [r.send() for _ in range(3)]
            for _ in waiting:
                await r.a.next_call()
            r.publish(level=HealthLevel.DOWN)  # no call into the door: its timer must see it
            done = [await finished(x) for x in waiting]
            assert [(x.status, served_by(x)) for x in done] == [(200, "b")] * 3
            # Not the breaker's doing: a's breaker heard no verdict.
            assert r.door.core.breaker("a").state is BreakerState.CLOSED
            assert r.opened == []

    run(main)


def test_a_lost_node_fails_over_at_once_when_told() -> None:
    async def main() -> None:
        async with rig() as r:
            r.a.default = hold()
            resp = r.send()
            await r.a.next_call()
            r.publish(weight=0.0)  # active, enabled and healthy, yet out of routing
            r.door.core.pool_changed()
            await asyncio.sleep(0)  # the failover is scheduled, not run inside pool_changed
            assert r.door.core.tries_on("a") == 0
            assert served_by(await finished(resp)) == "b"

    run(main)


def test_a_drained_replica_finishes_what_it_has() -> None:
    async def main() -> None:
        async with rig() as r:
            r.a.default = hold()
            resp = r.send()
            call = await r.a.next_call()
            r.publish(admin=AdminState.DRAINED)
            r.door.core.pool_changed()
            assert r.door.core.tries_on("a") == 1 and not resp.done
            call.let_go()
            assert served_by(await finished(resp)) == "a"
            assert r.b.seen == []

    run(main)


def test_a_started_stream_is_not_failed_over() -> None:
    async def main() -> None:
        async with rig() as r:
            r.a.script.append(stream_then_hold())
            resp = r.send(stream=True)
            await asyncio.wait_for(resp.first_body, WAIT)
            call = await r.a.next_call()
            r.door.core.replica_dead("a", "test")
            assert not resp.done and r.door.core.tries_on("a") == 1
            call.let_go()
            await finished(resp)
            assert not resp.aborted and b"[DONE]" in resp.body
            assert r.b.seen == []

    run(main)


def test_connect_timeout_trips_at_once_fails_over_free_and_stays_local() -> None:
    async def main() -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port), timeout=1.0)  # queue full
        try:
            retry = RetryPolicy(max_attempts=1, per_try_timeout_s=30.0)
            async with rig(
                a_port=port,
                connect_timeout_s=0.2,
                retry=retry,
                retry_budget_ratio=0.0,
                retry_budget_min_per_s=0.0,
            ) as r:
                resp = await finished(r.send())
                assert (resp.status, served_by(resp)) == (200, "b")
                assert r.door.core.breaker("a").state is BreakerState.OPEN
                assert r.opened == []  # evidence about this router's path only
                failures = "hanode_upstream_failures_total"
                assert r.metric(failures, replica="a", failure_class="connect_timeout") == 1
                assert r.metric(failures, replica="a", failure_class="connect_refused") == 0
        finally:
            filler.close()
            listener.close()

    run(main)


def test_latency_of_a_dead_try_is_charged_to_the_dead_replica() -> None:
    async def main() -> None:
        async with rig() as r:
            r.a.default = hold()
            resp = r.send()
            await r.a.next_call()
            await asyncio.sleep(0.5)  # a holds the request for a while (no timer is raced)
            r.publish(level=HealthLevel.DOWN)
            r.door.core.pool_changed()
            assert served_by(await finished(resp)) == "b"
            (dead,) = r.observer.of("a", ok=False)
            (served,) = r.observer.of("b", ok=True)
            assert dead.latency_s >= 0.5
            assert served.latency_s < dead.latency_s - 0.3
            assert served.ttft_s is None  # a whole answer has no time to first token
            assert r.observer.of("b", ok=False) == [] and r.observer.of("a", ok=True) == []

    run(main)
