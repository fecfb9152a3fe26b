"""bench.sse_client.KeepAlive against a small local server: one connection is reused while
responses end properly, and a new one is opened after ``connection: close`` or a cut."""

from __future__ import annotations

import asyncio

from bench.harness import HOST
from bench.sse_client import KeepAlive

SSE = b'data: {"x":1}\n\ndata: [DONE]\n\n'
KEEP = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(SSE), SSE)
CLOSE = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(SSE), SSE)
CUT = b"HTTP/1.1 200 OK\r\ncontent-length: 999\r\n\r\ndata: {"


def test_a_connection_is_reused_until_closed_or_cut() -> None:
    async def main() -> None:
        answers = [KEEP, KEEP, CLOSE, CUT, KEEP]
        connections = 0

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            while answers and await r.readuntil(b"\r\n\r\n"):
                answer = answers.pop(0)
                w.write(answer)
                await w.drain()
                if answer in (CLOSE, CUT):
                    w.close()
                    return

        server = await asyncio.start_server(serve, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        conn = KeepAlive(port)
        request = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n"
        seen = []
        for _ in range(5):
            tally, error = await conn.exchange(request, lambda: 5.0)
            seen.append((tally.finished, tally.done, tally.chunks, error is None))
        await conn.close()
        server.close()
        await server.wait_closed()
        assert seen == [
            (True, True, 1, True),
            (True, True, 1, True),
            (True, True, 1, True),  # then the server closes: a new connection next
            (False, False, 0, True),  # cut before its end: dropped too
            (True, True, 1, True),
        ]
        assert connections == 3

    asyncio.run(main())
