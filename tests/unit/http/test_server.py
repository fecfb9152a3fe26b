"""The HTTP/1.1 server over real loopback sockets: framing, keep-alive, pipelining, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from hanode.http.request import Request
from hanode.http.responder import Responder
from hanode.http.server import HttpServer, ServerLimits


def echo(request: Request, responder: Responder) -> None:
    if request.path == b"/stream":
        responder.start(200, b"text/event-stream")
        responder.write(b"data: 1\n\n")
        responder.write(b"data: 2\n\n")
        responder.end()
    elif request.path == b"/slow":
        asyncio.get_running_loop().call_later(0.05, responder.send, 200, b"slow")
    else:
        responder.send(200, request.method + b" " + request.path + b" " + request.body)


async def _with_server(
    fn: Callable[[str, int], Awaitable[None]], limits: ServerLimits | None = None
) -> None:
    server = HttpServer(echo, limits)
    host, port = await server.listen("127.0.0.1", 0)
    try:
        await asyncio.wait_for(fn(host, port), 10)
    finally:
        await server.close()


async def _exchange(host: str, port: int, data: bytes, until: bytes, limit: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    out = b""
    try:
        async with asyncio.timeout(limit):
            while until not in out:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                out += chunk
    finally:
        writer.close()
    return out


def run(coro: Awaitable[None]) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_keep_alive_and_pipelining_answer_in_order() -> None:
    async def body(host: str, port: int) -> None:
        req = b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n" + b"".join(
            b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(50)
        )
        out = await _exchange(host, port, req, b"GET /49 ")
        assert out.count(b"HTTP/1.1 200 OK") == 51
        first = out.index(b"slow")
        positions = [out.index(b"GET /%d " % i) for i in range(50)]
        assert first < positions[0] and positions == sorted(positions)

    run(_with_server(body))


def test_long_pipeline_does_not_recurse() -> None:
    async def body_until_closed(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        req = (
            b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n" + b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n" * 3000
        )
        writer.write(req + b"GET /end HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        out = await asyncio.wait_for(reader.read(-1), 8)
        writer.close()
        assert out.count(b"HTTP/1.1 200 OK") == 3002

    run(_with_server(body_until_closed))


def test_chunked_request_body_and_streamed_response() -> None:
    async def body(host: str, port: int) -> None:
        req = (
            b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        out = await _exchange(host, port, req, b"hello world")
        assert b"POST /echo hello world" in out
        out = await _exchange(host, port, b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n", b"0\r\n\r\n")
        assert b"transfer-encoding: chunked" in out
        assert b"9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n" in out

    run(_with_server(body))


def test_head_of_stream_has_no_body_and_keeps_connection_usable() -> None:
    async def body(host: str, port: int) -> None:
        req = b"HEAD /stream HTTP/1.1\r\nhost: x\r\n\r\nGET /after HTTP/1.1\r\nhost: x\r\n\r\n"
        out = await _exchange(host, port, req, b"GET /after ")
        _, _, rest = out.partition(b"\r\n\r\n")
        assert rest.startswith(b"HTTP/1.1 200 OK"), rest[:40]

    run(_with_server(body))


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n", b"413"),
        (b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 3000 + b"\r\n\r\n", b"431"),
        (b"GARBAGE\r\n\r\n", b"400"),
    ],
)
def test_limits_refuse_with_openai_error_and_close(request_bytes: bytes, status: bytes) -> None:
    limits = ServerLimits(max_body_bytes=1024, max_header_bytes=1024)

    async def body(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request_bytes)
        out = await asyncio.wait_for(reader.read(-1), 3)  # server closes the connection
        writer.close()
        assert out.startswith(b"HTTP/1.1 " + status), out[:60]
        assert b'"error":{"message":' in out

    run(_with_server(body, limits))


def test_upgrade_is_ignored_answered_then_closed() -> None:
    async def body(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /u HTTP/1.1\r\nhost: x\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n")
        out = await asyncio.wait_for(reader.read(-1), 3)
        writer.close()
        assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"GET /u ")

    run(_with_server(body))


def test_chunked_body_over_limit_is_refused() -> None:
    limits = ServerLimits(max_body_bytes=100)

    async def body(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"c8\r\n" + b"a" * 200 + b"\r\n")
        out = await asyncio.wait_for(reader.read(-1), 3)
        writer.close()
        assert out.startswith(b"HTTP/1.1 413")

    run(_with_server(body, limits))


def test_slow_request_gets_408_before_the_longer_idle_timeout() -> None:
    limits = ServerLimits(header_timeout_s=0.2, idle_timeout_s=5.0)

    async def body(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n")  # never finished
        out = await asyncio.wait_for(reader.read(-1), 2)
        writer.close()
        assert out.startswith(b"HTTP/1.1 408")

    run(_with_server(body, limits))


def test_slow_request_gets_408_and_idle_connection_is_closed() -> None:
    limits = ServerLimits(header_timeout_s=0.2, idle_timeout_s=0.3)

    async def body(host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n")  # never finished
        out = await asyncio.wait_for(reader.read(-1), 3)
        writer.close()
        assert out.startswith(b"HTTP/1.1 408")
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        out = await asyncio.wait_for(reader.read(-1), 3)  # answered, then idle-closed quietly
        writer.close()
        assert out.count(b"HTTP/1.1 ") == 1 and b"200 OK" in out

    run(_with_server(body, limits))


def test_connection_cap() -> None:
    limits = ServerLimits(max_connections=2)

    async def body(host: str, port: int) -> None:
        held = [await asyncio.open_connection(host, port) for _ in range(2)]
        await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_connection(host, port)
        out = await asyncio.wait_for(reader.read(-1), 3)
        writer.close()
        assert out.startswith(b"HTTP/1.1 503")
        for _, w in held:
            w.close()

    run(_with_server(body, limits))


def test_handler_exception_costs_one_request() -> None:
    errors: list[Exception] = []

    def bad(request: Request, responder: Responder) -> None:
        if request.path == b"/boom":
            raise RuntimeError("bug")
        responder.send(200, b"fine")

    async def main() -> None:
        server = HttpServer(bad, on_handler_error=errors.append)
        host, port = await server.listen("127.0.0.1", 0)
        try:
            req = b"GET /boom HTTP/1.1\r\nhost: x\r\n\r\nGET /ok HTTP/1.1\r\nhost: x\r\n\r\n"
            out = await _exchange(host, port, req, b"fine")
            assert out.startswith(b"HTTP/1.1 500")
            assert b"fine" in out
            assert len(errors) == 1
        finally:
            await server.close()

    asyncio.run(main())
