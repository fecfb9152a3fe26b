"""Regression tests of issue 16, findings 1, 2, 7 and 9, reproduced the way they were found:
a client's timeout header, a replica that sends an error head and then nothing, a stream that
stalls after a few chunks, and a router that runs out of file descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import structlog

from hanode.policies.breaker import BreakerConfig, BreakerState
from hanode.policies.failure import FailureClass as F
from hanode.policies.retry import RetryPolicy
from tests.unit.router.fakes import (
    MODEL,
    Behaviour,
    Call,
    FakeResponder,
    hold,
    respond,
)
from tests.unit.router.fakes import (
    rig as shared_rig,
)

WAIT = 5.0  # bound on every wait; each test finishes in well under a second when right
CHUNK = b'data: {"choices":[{"delta":{"content":"tok"}}]}\n\n'


# The shared rig, retrying at once (no backoff) unless a test says otherwise.
rig = functools.partial(shared_rig, retry=RetryPolicy(per_try_timeout_s=30.0, cap_backoff_s=0.0))


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30.0))


async def finished(responder: FakeResponder) -> FakeResponder:
    return await asyncio.wait_for(asyncio.shield(responder.finished), WAIT)


def error_of(responder: FakeResponder) -> dict[str, Any]:
    doc = orjson.loads(responder.body)
    assert isinstance(doc, dict) and isinstance(doc["error"], dict)
    return doc["error"]


def sse_events(body: bytes) -> list[bytes]:
    return [e[len(b"data: ") :] for e in body.split(b"\n\n") if e.startswith(b"data: ")]


# -- misbehaving replicas ----------------------------------------------------------------------
def error_head_then_stall(status: int = 500, length: int = 100) -> Behaviour:
    """An error head announcing a body that never comes (until the router hangs up)."""

    async def go(call: Call) -> bool:
        call.writer.write(
            b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            % (status, length)
        )
        await call.writer.drain()
        await asyncio.wait([call.gone, call.release], return_when=asyncio.FIRST_COMPLETED)
        return False

    return go


def chunks_then_stall(n: int, gap_s: float = 0.0) -> Behaviour:
    """A 200 SSE stream: ``n`` chunks ``gap_s`` apart, then silence until the router hangs
    up or the test lets the call go (then the rest of the stream and [DONE])."""

    async def go(call: Call) -> bool:
        call.writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for _ in range(n):
            call.writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
            await call.writer.drain()
            if gap_s:
                await asyncio.sleep(gap_s)
        await asyncio.wait([call.gone, call.release], return_when=asyncio.FIRST_COMPLETED)
        if call.gone.done():
            return False
        rest = b"data: [DONE]\n\n"
        call.writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        await call.writer.drain()
        return True

    return go


# -- finding 1: a client's deadline is the client's failure ------------------------------------
def test_client_deadline_gives_no_verdict_on_the_replica() -> None:
    """Ten requests with x-hanode-timeout: 0.001 (and one with the OpenAI SDK's header) used to
    count as replica timeouts: with a trip count of 1 they opened the breakers, and passive
    health saw failures. The client chose the deadline: no verdict, a clear 504 for it."""

    async def main() -> None:
        async with rig(breaker=BreakerConfig(timeout_trip_count=1)) as r:
            r.a.default = r.b.default = hold()
            sent = [r.send(timeout_s=0.001) for _ in range(10)]
            sent.append(r.send(timeout_s=0.001, header=b"x-stainless-timeout"))
            done = [await finished(x) for x in sent]
            headers = [b"x-hanode-timeout"] * 10 + [b"x-stainless-timeout"]
            for resp, header in zip(done, headers, strict=True):
                assert resp.status == 504
                err = error_of(resp)
                assert err["code"] == "client_deadline_exceeded"
                assert header.decode() in err["message"] and "0.001s" in err["message"]
            for name in ("a", "b"):
                snap = r.breaker(name)
                assert snap["state"] == "closed" and snap["consecutive_timeouts"] == 0
            assert r.opened == []
            assert r.observer.samples == []  # passive health heard nothing against a or b
            failures = "hanode_upstream_failures_total"
            assert r.metric(failures, replica="a", failure_class="timeout") == 0
            r.a.default = respond()
            ok = await finished(r.send())
            assert ok.status == 200 and ok.header(b"x-hanode-replica") == b"a"

    run(main)


def test_operator_deadline_still_times_the_replica_out() -> None:
    """Unchanged: the deadline the operator configured is a verdict on a replica that did
    not answer within it; the error says which deadline fired."""

    async def main() -> None:
        async with rig(request_timeout_s=0.2, breaker=BreakerConfig(timeout_trip_count=1)) as r:
            r.a.default = hold()
            resp = await finished(r.send())
            assert resp.status == 504
            err = error_of(resp)
            assert err["code"] == "timeout" and "0.2s" in err["message"]
            assert "within 30s" not in err["message"]  # not the per-try timeout: not what fired
            assert r.door.core.breaker("a").state is BreakerState.OPEN

    run(main)


# -- finding 9: a header may shorten the operator's deadline, never lengthen it -----------------
def test_client_header_cannot_lengthen_the_configured_deadline() -> None:
    """x-hanode-timeout: 75 held a request 75 s despite request_timeout_s = 30."""

    async def main() -> None:
        for settings in ({"request_timeout_s": 0.2}, {"model_timeouts": {MODEL: 0.2}}):
            async with rig(**settings) as r:
                r.a.default = r.b.default = hold()
                t0 = r.door.loop.time()
                resp = await finished(r.send(timeout_s=75))
                assert resp.status == 504 and r.door.loop.time() - t0 < 2.0
                assert "0.2s" in error_of(resp)["message"]

    run(main)


# -- finding 2: an error head followed by a stall -------------------------------------------
def test_error_head_then_stall_is_cut_and_is_the_replicas_timeout() -> None:
    """A replica sent 500 with content-length: 100 and then nothing: the client waited for
    ever and the breaker stayed closed. The body must come within the try's time."""

    async def main() -> None:
        retry = RetryPolicy(max_attempts=1, per_try_timeout_s=0.2)
        async with rig(retry=retry, breaker=BreakerConfig(timeout_trip_count=1)) as r:
            r.a.script.append(error_head_then_stall())
            resp = await finished(r.send())
            assert resp.status == 504
            assert "500" in error_of(resp)["message"]
            call = r.a.seen[0]
            await asyncio.wait_for(call.gone, WAIT)  # the stalled try was abandoned
            snap = r.breaker("a")
            assert snap["state"] == "open" and snap["last_failure_class"] == "timeout"
            assert r.opened == []  # a timeout may be this router's path: stays local
            assert len(r.observer.of("a", ok=False)) == 1
            assert r.door.inflight["a"] == 0

    run(main)


def test_error_head_then_stall_fails_over_before_the_first_byte() -> None:
    async def main() -> None:
        async with rig(retry=RetryPolicy(per_try_timeout_s=0.2, cap_backoff_s=0.0)) as r:
            r.a.script.append(error_head_then_stall(status=503))
            resp = await finished(r.send())
            assert resp.status == 200 and resp.header(b"x-hanode-replica") == b"b"
            assert r.breaker("a")["consecutive_timeouts"] == 1

    run(main)


# -- finding 9: a stream that stalls after some chunks ---------------------------------------
def test_stalled_stream_is_cut_with_a_terminal_error_event() -> None:
    """Three chunks, then silence: the stream used to be cut only at request_timeout_s (300 s)
    with no error event. Now after stream_idle_timeout_s, with a data: {"error": ...} event,
    never a clean [DONE], and it is the replica's failure. (Continuation off: with it on the
    stream is continued, see test_continuation.py.)"""

    async def main() -> None:
        async with rig(
            stream_idle_timeout_s=0.2,
            breaker=BreakerConfig(timeout_trip_count=1),
            stream_continuation=False,
        ) as r:
            r.a.script.append(chunks_then_stall(3))
            t0 = r.door.loop.time()
            resp = await finished(r.send(stream=True))
            assert r.door.loop.time() - t0 < 2.0
            assert resp.status == 200 and resp.aborted  # cut, not ended cleanly
            events = sse_events(resp.body)
            assert events[:3] == [CHUNK[len(b"data: ") : -2]] * 3
            assert b"[DONE]" not in resp.body
            last = orjson.loads(events[-1])
            assert last["error"]["code"] == "stream_stalled"
            assert "0.2s" in last["error"]["message"]
            await asyncio.wait_for(r.a.seen[0].gone, WAIT)  # the upstream try was abandoned
            snap = r.breaker("a")
            assert snap["state"] == "open" and snap["last_failure_class"] == F.TIMEOUT.value
            assert r.opened == []
            assert len(r.observer.of("a", ok=False)) == 1
            failures = "hanode_upstream_failures_total"
            assert r.metric(failures, replica="a", failure_class="stream_stall") == 1
            assert r.door.inflight["a"] == 0
            assert r.b.seen == []  # never retried after the first byte

    run(main)


def test_a_steady_stream_slower_than_nothing_is_not_cut() -> None:
    """Chunks 20 ms apart for longer than the idle timeout: each one re-arms it."""

    async def main() -> None:
        async with rig(stream_idle_timeout_s=0.15) as r:
            r.a.script.append(chunks_then_stall(15, gap_s=0.02))
            resp = r.send(stream=True)
            call = await r.a.next_call()
            while len(sse_events(resp.body)) < 15 and not resp.done:
                await asyncio.sleep(0.01)  # bounded: the stream ends or is cut within WAIT
            assert not resp.done
            call.let_go()
            await finished(resp)
            assert not resp.aborted and resp.body.endswith(b"data: [DONE]\n\n")

    run(main)


def test_first_token_may_take_the_per_try_time() -> None:
    """A 200 head comes at once but the first token takes long (a queue, a long prompt): the
    gap before the first body byte is bounded by the per-try timeout, not the idle one."""

    async def main() -> None:
        retry = RetryPolicy(per_try_timeout_s=3.0)
        async with rig(stream_idle_timeout_s=0.1, retry=retry) as r:
            r.a.script.append(chunks_then_stall(0))
            resp = r.send(stream=True)
            call = await r.a.next_call()
            await asyncio.sleep(0.5)  # 5x the idle timeout, far from the 3 s per-try one
            assert not resp.done
            call.let_go()
            await finished(resp)
            assert not resp.aborted and b"[DONE]" in resp.body

    run(main)


def test_stream_cut_by_the_deadline_gets_an_error_event_too() -> None:
    async def main() -> None:
        async with rig(stream_idle_timeout_s=5.0) as r:
            r.a.script.append(chunks_then_stall(2))
            resp = await finished(r.send(stream=True, timeout_s=0.3))
            assert resp.aborted and b"[DONE]" not in resp.body
            last = orjson.loads(sse_events(resp.body)[-1])
            assert last["error"]["code"] == "client_deadline_exceeded"
            assert r.breaker("a")["consecutive_timeouts"] == 0

    run(main)


# -- finding 7: the router's own file descriptors ------------------------------------------
@contextlib.contextmanager
def no_free_fds() -> Iterator[None]:
    """Exhaust this process's file descriptors (a lowered soft limit, then filled)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    hog: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (used + 32, hard))
    try:
        for _ in range(used + 32):  # bounded: the limit stops it first
            try:
                hog.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        yield
    finally:
        for fd in hog:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_router_out_of_file_descriptors_blames_no_replica() -> None:
    """EMFILE on connect is the router's own trouble: it used to count against (and with
    free failovers, open) every replica's breaker. Now: no verdict, 503 with Retry-After,
    one loud log line however many requests meet it."""

    async def main() -> None:
        async with rig(breaker=BreakerConfig(consecutive_failures=1)) as r:
            with structlog.testing.capture_logs() as logs, no_free_fds():
                done = [await finished(r.send()) for _ in range(3)]
            for resp in done:
                assert resp.status == 503 and resp.header(b"retry-after") == b"2"
                assert "open files" in error_of(resp)["message"]
            for name in ("a", "b"):
                snap = r.breaker(name)
                assert snap["state"] == "closed" and snap["consecutive_failures"] == 0
            assert r.opened == [] and r.observer.samples == []
            assert r.a.seen == [] and r.b.seen == []
            loud = [e for e in logs if e["event"] == "router_out_of_resources"]
            assert len(loud) == 1 and loud[0]["log_level"] == "error"
            ok = await finished(r.send())  # descriptors back: the replicas serve at once
            assert ok.status == 200 and ok.header(b"x-hanode-replica") == b"a"

    run(main)
