"""Issue 16, finding 12 (HTTP side): ``Expect: 100-continue`` on a pipelined request, chunked
trailers, and the bearer scheme's case, each reproduced over a raw socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from hanode.http.request import Request
from hanode.http.responder import Responder
from hanode.http.server import HttpServer
from hanode.metrics.registry import NodeMetrics
from hanode.router.frontdoor import FrontDoor, RouterSettings
from tests.unit.router.fakes import FakeView, state

KEY = "k" * 16 + "-right"


def _read_chunked(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(head, body, rest) of one chunked response; raises if the framing is broken."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, data[:200]
    body = b""
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        assert sep, rest[:80]
        size = int(size_line, 16)  # a stray "HTTP/1.1 100" here is a framing error
        if size == 0:
            assert rest.startswith(b"\r\n"), rest[:80]
            return head, body, rest[2:]
        body += rest[:size]
        assert rest[size : size + 2] == b"\r\n", rest[: size + 2]
        rest = rest[size + 2 :]


def test_100_continue_of_a_pipelined_request_never_lands_inside_a_chunked_response() -> None:
    streams: list[Responder] = []
    started = asyncio.Event()

    def handler(request: Request, responder: Responder) -> None:
        if request.path == b"/stream":
            responder.start(200)
            responder.write(b"data: 1\n\n")
            streams.append(responder)
            started.set()
        else:
            responder.send(200, b"echo " + request.body)

    async def main() -> None:
        server = HttpServer(handler)
        host, port = await server.listen("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(host, port)
            # One write: the streamed GET, then a POST that waits for 100 before its body.
            writer.write(
                b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n"
                b"POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
                b"expect: 100-continue\r\n\r\n"
            )
            await asyncio.wait_for(started.wait(), 5)
            data = await asyncio.wait_for(reader.readuntil(b"data: 1\n\n\r\n"), 5)
            streams[0].write(b"data: 2\n\n")
            streams[0].end()
            data += await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
            head, body, rest = _read_chunked(data)
            assert head.startswith(b"HTTP/1.1 200") and body == b"data: 1\n\ndata: 2\n\n"
            # The 100 comes once the POST is the request being answered, then its answer.
            rest += await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert rest == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hello")
            answer = await asyncio.wait_for(reader.readuntil(b"echo hello"), 5)
            assert answer.startswith(b"HTTP/1.1 200")
            writer.close()
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_100_continue_alone_is_still_sent_at_once() -> None:
    def handler(request: Request, responder: Responder) -> None:
        responder.send(200, b"echo " + request.body)

    async def main() -> None:
        server = HttpServer(handler)
        host, port = await server.listen("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                b"POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
            )
            cont = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert cont == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"hi")
            assert b"echo hi" in await asyncio.wait_for(reader.readuntil(b"echo hi"), 5)
            writer.close()
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 20))


def test_chunked_trailers_never_become_request_headers() -> None:
    def handler(request: Request, responder: Responder) -> None:
        headers = {k.decode(): v.decode() for k, v in request.headers.items()}
        responder.send(200, orjson.dumps({"headers": headers, "body": request.body.decode()}))

    async def main() -> None:
        server = HttpServer(handler)
        host, port = await server.listen("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(
                b"POST /p HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nx-a: head\r\n\r\n"
                b"2\r\nhi\r\n0\r\nx-a: trailer\r\nauthorization: Bearer sneaky\r\n\r\n"
                b"GET /next HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            )
            out = await asyncio.wait_for(reader.read(-1), 5)
            writer.close()
            head, _, rest = out.partition(b"\r\n\r\n")
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            answer = orjson.loads(rest[:length])
            assert answer["body"] == "hi" and answer["headers"]["x-a"] == "head"
            assert "authorization" not in answer["headers"]
            assert out.count(b"HTTP/1.1 200") == 2  # the connection carried on in step
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(main(), 20))


# -- through the front door ---------------------------------------------------------------------
@asynccontextmanager
async def _front_door() -> AsyncIterator[tuple[str, int]]:
    view = FakeView()
    view.publish(state("a", 1))  # /v1/models never dials it
    door = FrontDoor(view, RouterSettings(api_keys=(KEY,), pin_seeds=False), NodeMetrics())
    server = HttpServer(door.handle)
    host, port = await server.listen("127.0.0.1", 0)
    try:
        yield host, port
    finally:
        await server.close()
        door.close()


async def _ask(host: str, port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()


def test_a_trailer_authorization_is_not_honoured_by_the_front_door() -> None:
    async def main() -> None:
        async with _front_door() as (host, port):
            out = await _ask(
                host,
                port,
                b"GET /v1/models HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n"
                b"connection: close\r\n\r\n0\r\nauthorization: Bearer "
                + KEY.encode()
                + b"\r\n\r\n",
            )
            assert out.startswith(b"HTTP/1.1 401"), out[:80]
            assert b"invalid_api_key" in out

    asyncio.run(asyncio.wait_for(main(), 20))


def test_the_bearer_scheme_is_case_insensitive_at_the_front_door() -> None:
    async def main() -> None:
        async with _front_door() as (host, port):
            for scheme in (b"Bearer", b"bearer", b"BEARER", b"bEaReR"):
                for sep in (b" ", b"  "):
                    out = await _ask(
                        host,
                        port,
                        b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                        b"authorization: " + scheme + sep + KEY.encode() + b"\r\n\r\n",
                    )
                    assert out.startswith(b"HTTP/1.1 200"), (scheme, sep, out[:80])
            for bad in (b"bearer " + KEY.encode()[:-1], b"Basic " + KEY.encode(), KEY.encode()):
                out = await _ask(
                    host,
                    port,
                    b"GET /v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                    b"authorization: " + bad + b"\r\n\r\n",
                )
                assert out.startswith(b"HTTP/1.1 401"), (bad, out[:80])

    asyncio.run(asyncio.wait_for(main(), 20))


def test_the_bearer_scheme_is_case_insensitive_on_the_control_api() -> None:
    """The gRPC side already accepted any case; both must agree (RFC 7235)."""
    from hanode.api.server import _TokenInterceptor

    check = _TokenInterceptor((KEY,))._authorized
    for scheme in ("Bearer", "bearer", "BEARER"):
        assert check((("authorization", f"{scheme} {KEY}"),))
    assert not check((("authorization", f"Basic {KEY}"),))
    assert not check((("authorization", KEY),))
