"""Issue 16, finding 11: connections that never send must not hold the connection cap.

4,200 connections that sent nothing filled the 4,096 cap for ``idle_timeout_s`` (75 s) and new
clients got 503. Now a connection has ``header_timeout_s`` from its first byte deadline (its
opening, for the first request) to send a whole request, and at the cap the oldest idle
keep-alive connection is closed so a new client gets in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from hanode.http.protocol import HttpServerProtocol
from hanode.http.request import Request
from hanode.http.responder import Responder
from hanode.http.server import HttpServer, ServerLimits

GET = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"


def ok(request: Request, responder: Responder) -> None:
    responder.send(200, b"ok")


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sent until it closed the connection (EOF), within a bound."""
    return await asyncio.wait_for(reader.read(-1), within)


async def _answer(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\nok"), 5)


def test_silent_connections_are_closed_at_the_header_timeout_not_the_idle_one() -> None:
    limits = ServerLimits(max_connections=16, header_timeout_s=0.2, idle_timeout_s=60.0)

    async def main() -> None:
        server = HttpServer(ok, limits)
        host, port = await server.listen("127.0.0.1", 0)
        try:
            silent = [await asyncio.open_connection(host, port) for _ in range(16)]
            reader, writer = await asyncio.open_connection(host, port)
            assert (await _closed_by_server(reader, 5)).startswith(b"HTTP/1.1 503")  # full
            writer.close()
            # The silent ones go at the header timeout (0.2 s), long before the idle one (60 s).
            for r, w in silent:
                assert await _closed_by_server(r, 5) == b""  # closed quietly: nothing was asked
                w.close()
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(GET)
            assert (await _answer(reader)).startswith(b"HTTP/1.1 200")
            writer.close()
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_at_the_cap_the_oldest_idle_keep_alive_connection_makes_room() -> None:
    limits = ServerLimits(max_connections=4, header_timeout_s=10.0, idle_timeout_s=60.0)

    async def main() -> None:
        server = HttpServer(ok, limits)
        host, port = await server.listen("127.0.0.1", 0)
        try:
            idle = []
            for _ in range(4):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(GET)
                await _answer(reader)  # answered; the connection stays open, idle
                idle.append((reader, writer))
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(GET)
            assert (await _answer(reader)).startswith(b"HTTP/1.1 200")  # not 503
            assert await _closed_by_server(idle[0][0], 5) == b""  # the oldest idle one went
            for r, w in idle[1:]:  # the others are still served
                w.write(GET)
                assert (await _answer(r)).startswith(b"HTTP/1.1 200")
            for _, w in [*idle, (reader, writer)]:
                w.close()
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_connections_busy_with_a_request_are_not_evicted() -> None:
    limits = ServerLimits(max_connections=2, header_timeout_s=10.0, idle_timeout_s=60.0)
    held: list[Responder] = []
    seen: asyncio.Queue[None] = asyncio.Queue()

    def hold(request: Request, responder: Responder) -> None:
        if request.path == b"/hold":
            held.append(responder)
            seen.put_nowait(None)
        else:
            responder.send(200, b"ok")

    async def main() -> None:
        server = HttpServer(hold, limits)
        host, port = await server.listen("127.0.0.1", 0)
        try:
            busy = [await asyncio.open_connection(host, port) for _ in range(2)]
            for r, w in busy:
                w.write(GET)
                await _answer(r)  # idle for a moment, then busy again:
                w.write(b"GET /hold HTTP/1.1\r\nhost: x\r\n\r\n")
                await asyncio.wait_for(seen.get(), 5)
            reader, writer = await asyncio.open_connection(host, port)
            assert (await _closed_by_server(reader, 5)).startswith(b"HTTP/1.1 503")
            writer.close()
            for responder in held:
                responder.send(200, b"ok")
            for r, w in busy:
                assert (await _answer(r)).startswith(b"HTTP/1.1 200")
                w.close()
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_connection_with_a_request_half_sent_is_not_evicted() -> None:
    async def main() -> None:
        server = HttpServer(ok, ServerLimits(max_connections=1))
        clock = _Clock()
        server.loop = clock  # type: ignore[assignment]
        first, first_t = HttpServerProtocol(server), _Transport()
        first.connection_made(first_t)  # type: ignore[arg-type]
        first.data_received(GET + b"GET / HTTP/1.1\r\n")  # answered, then a request begun
        second, second_t = HttpServerProtocol(server), _Transport()
        second.connection_made(second_t)  # type: ignore[arg-type]
        assert second_t.out.startswith(b"HTTP/1.1 503") and not first_t.closed

    asyncio.run(main())


# -- the first request's deadline, on a clock the test moves ------------------------------------
class _Handle:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self._when = when
        self.callback = callback
        self.cancelled = False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class _Clock:
    """The few loop methods a connection uses, on a clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[_Handle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Handle:
        handle = _Handle(when, callback)
        self.handles.append(handle)
        return handle

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        callback(*args)

    def advance(self, to: float) -> None:
        self.now = to
        while True:
            due = [h for h in self.handles if not h.cancelled and h.when() <= to]
            if not due:
                return
            for h in due:
                self.handles.remove(h)
                h.callback()


class _Transport:
    def __init__(self) -> None:
        self.out = b""
        self.closed = False

    def get_extra_info(self, name: str) -> Any:
        return None

    def write(self, data: bytes) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_the_first_request_counts_from_the_connection_not_from_its_first_byte() -> None:
    """A client that waits, then trickles, gets ``header_timeout_s`` from the opening in all."""

    async def main() -> None:
        server = HttpServer(ok, ServerLimits(header_timeout_s=1.0, idle_timeout_s=60.0))
        clock = _Clock()
        server.loop = clock  # type: ignore[assignment]
        conn = HttpServerProtocol(server)
        transport = _Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        clock.advance(0.9)
        conn.data_received(b"G")  # the first byte, just before the deadline
        clock.advance(1.1)
        assert transport.closed and transport.out.startswith(b"HTTP/1.1 408")
        # Later requests on a kept-alive connection count from their own first byte.
        conn = HttpServerProtocol(server)
        transport = _Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.data_received(GET)
        assert transport.out.startswith(b"HTTP/1.1 200") and not transport.closed
        clock.advance(30.0)  # idle, within the keep-alive time
        conn.data_received(b"GET / HTTP/1.1\r\n")
        clock.advance(30.9)
        assert not transport.closed
        clock.advance(31.1)
        assert transport.closed and transport.out.count(b"HTTP/1.1 408") == 1

    asyncio.run(main())
