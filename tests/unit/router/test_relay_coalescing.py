"""Chunk writes on the relay's hot path: what one upstream read brings leaves in one write to
the client (head included on the first), and a client that stops reading still stops the
upstream reads (backpressure), with the real Responder over a recording transport."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import cast

from hanode.http.protocol import HttpServerProtocol
from hanode.http.responder import Responder
from hanode.router.relay import Relay
from tests.unit.router.fakes import Behaviour, Call, chat_chunk, chat_request, rig, usage_chunk

WAIT = 5.0
DONE = b"data: [DONE]\n\n"
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30.0))


def chunked(*events: bytes) -> bytes:
    """Each event in its own HTTP chunk, as engines write them."""
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)


class Transport:
    """The client side of the server connection: records each write; past ``high_water``
    buffered bytes it calls pause_writing, as asyncio's transports do, until ``drain``."""

    def __init__(self, conn: Client, high_water: int | None) -> None:
        self.conn = conn
        self.writes: list[bytes] = []
        self.high_water = high_water
        self.buffered = 0
        self.paused = False
        self.closed = False
        self.wrote = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.wrote.set()
        self.buffered += len(data)
        if self.high_water is not None and self.buffered > self.high_water and not self.paused:
            self.paused = True
            self.conn.pause_writing()

    def drain(self) -> None:
        """The client read everything."""
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.conn.resume_writing()

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class Client:
    """What the Responder needs of HttpServerProtocol, flow control included."""

    def __init__(self, high_water: int | None = None) -> None:
        self.transport = Transport(self, high_water)
        self.flow: tuple[Callable[[], None], Callable[[], None]] | None = None
        self.ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def response_done(self, keep_alive: bool) -> None:
        self.flow = None
        if not self.ended.done():
            self.ended.set_result(True)

    def close(self) -> None:
        self.transport.close()
        if not self.ended.done():
            self.ended.set_result(False)

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow[0]()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow[1]()

    @property
    def responder(self) -> Responder:
        return Responder(cast(HttpServerProtocol, self), True, False)

    async def next_write(self) -> bytes:
        t = self.transport
        seen = len(t.writes)
        while len(t.writes) == seen:
            t.wrote.clear()
            await asyncio.wait_for(t.wrote.wait(), WAIT)
        return t.writes[seen]


def in_reads(*reads: bytes) -> tuple[Behaviour, list[Call]]:
    """A replica that sends each of ``reads`` in one socket write (so one read at the router:
    one small loopback write is one segment), the next only once the test lets it go."""
    calls: list[Call] = []

    async def go(call: Call) -> bool:
        calls.append(call)
        for i, data in enumerate(reads):
            if i:
                await call.release
                call.release = asyncio.get_running_loop().create_future()
            call.writer.write(data)
            await call.writer.drain()
        return True

    return go, calls


def events_in(data: bytes) -> list[bytes]:
    """The SSE events of a chunked body part, whatever its chunk framing."""
    body = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        body, data = body + rest[:n], rest[n + 2 :]
    return [e + b"\n\n" for e in body.split(b"\n\n") if e]


def test_chunks_of_one_read_leave_in_one_write_head_included() -> None:
    first = [chat_chunk("A", role=True), chat_chunk("A", "one"), chat_chunk("A", " two")]
    last = [chat_chunk("A", " three", finish="stop"), usage_chunk("A", 3, 3), DONE]

    async def main() -> None:
        async with rig() as r:
            behave, calls = in_reads(HEAD + chunked(*first), chunked(*last) + b"0\r\n\r\n")
            r.a.script.append(behave)
            client = Client()
            r.door.handle(chat_request(stream=True), client.responder)
            out = await client.next_write()
            head, _, body = out.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and b"x-hanode-replica: a" in head
            assert body == chunked(b"".join(first))  # three events: one chunk, one write
            calls[0].let_go()
            assert await asyncio.wait_for(client.ended, WAIT)
            writes = client.transport.writes
            assert len(writes) == 2  # the rest and the end of the body together
            assert writes[1] == chunked(b"".join(last)) + b"0\r\n\r\n"
            assert events_in(body + writes[1]) == first + last
            success = "hanode_request_success_total"
            for kind in ("technical", "functional", "quality"):  # the scan saw usage, [DONE]
                assert r.metric(success, model="m", replica="a", kind=kind) == 1
            sample = r.observer.of("a", True)[0]
            assert sample.ttft_s is not None and sample.tpot_s is not None

    run(main)


def test_a_client_that_stops_reading_stops_the_upstream_reads() -> None:
    """The write that fills the client's buffer (inside the upstream read) pauses reading
    from the replica; the client draining its buffer resumes it, and nothing is lost."""
    big = [chat_chunk("A", "x" * 300) for _ in range(4)]
    rest = [chat_chunk("A", " y", finish="stop"), DONE]

    async def main() -> None:
        async with rig() as r:
            behave, calls = in_reads(HEAD + chunked(*big), chunked(*rest) + b"0\r\n\r\n")
            r.a.script.append(behave)
            client = Client(high_water=1000)
            r.door.handle(chat_request(stream=True), client.responder)
            await client.next_write()
            assert client.transport.paused
            relay = next(iter(r.door.core.registry.get("a").tries))
            assert isinstance(relay, Relay)
            conn = relay._handle.conn if relay._handle is not None else None
            upstream = conn.transport if conn is not None else None
            assert upstream is not None and not upstream.is_reading()
            calls[0].let_go()  # the replica sends on; the router does not read it yet
            await calls[0].writer.drain()
            assert len(client.transport.writes) == 1 and not client.ended.done()
            client.transport.drain()
            assert upstream.is_reading()
            assert await asyncio.wait_for(client.ended, WAIT)
            got = events_in(b"".join(client.transport.writes).partition(b"\r\n\r\n")[2])
            assert got == big + rest

    run(main)
