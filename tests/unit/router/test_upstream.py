"""Upstream connection pool over real loopback sockets: reuse, keep-alive races, failures."""

from __future__ import annotations

import asyncio

from hanode.router.upstream import UpstreamPool


class Recorder:
    def __init__(self) -> None:
        self.done: asyncio.Future[tuple[int, bytes, str | None]] = (
            asyncio.get_running_loop().create_future()
        )
        self.status = 0
        self.body = b""

    def on_head(self, status: int, headers: dict[bytes, bytes], chunked: bool) -> None:
        self.status = status

    def on_body(self, data: bytes) -> None:
        self.body += data

    def on_complete(self) -> None:
        self.done.set_result((self.status, self.body, None))

    def on_error(self, message: str, connect_failed: bool) -> None:
        self.done.set_result((0, b"", ("refused: " if connect_failed else "") + message))

    def flush(self) -> None:
        pass


REQ = b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"


async def _serve(close_after_each: bool) -> tuple[asyncio.AbstractServer, int, list[int]]:
    """A replica that answers each request; optionally drops the connection right after."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
                if close_after_each:
                    await asyncio.sleep(0.01)
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


def test_keep_alive_connections_are_reused() -> None:
    async def main() -> None:
        server, port, connections = await _serve(close_after_each=False)
        pool = UpstreamPool("127.0.0.1", port)
        for _ in range(5):
            rec = Recorder()
            pool.send(rec, REQ)
            assert await asyncio.wait_for(rec.done, 3) == (200, b"ok", None)
        assert len(connections) == 1
        assert pool.idle_count == 1
        pool.close()
        server.close()

    asyncio.run(main())


def test_connections_closed_by_the_replica_are_not_reused() -> None:
    async def main() -> None:
        server, port, connections = await _serve(close_after_each=True)
        pool = UpstreamPool("127.0.0.1", port)
        for _ in range(3):
            rec = Recorder()
            pool.send(rec, REQ)
            assert await asyncio.wait_for(rec.done, 3) == (200, b"ok", None)
            await asyncio.sleep(0.05)  # the replica has closed the idle connection by now
        assert len(connections) == 3
        pool.close()
        server.close()

    asyncio.run(main())


def test_keep_alive_race_is_resent_on_a_fresh_connection() -> None:
    """The replica drops a reused connection without answering: resend, do not fail."""

    async def main() -> None:
        served: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            served.append(1)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the second request on this connection...
            writer.transport.abort()  # ...is dropped unanswered, as an idle-timeout race does

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        pool = UpstreamPool("127.0.0.1", server.sockets[0].getsockname()[1])
        for _ in range(3):
            rec = Recorder()
            pool.send(rec, REQ)
            assert await asyncio.wait_for(rec.done, 3) == (200, b"ok", None)
        assert len(served) == 3
        pool.close()
        server.close()

    asyncio.run(main())


def test_refused_connection_is_reported_as_connect_failure() -> None:
    async def main() -> None:
        server, port, _ = await _serve(close_after_each=False)
        server.close()
        await server.wait_closed()
        pool = UpstreamPool("127.0.0.1", port, connect_timeout_s=1.0)
        rec = Recorder()
        pool.send(rec, REQ)
        status, _, error = await asyncio.wait_for(rec.done, 3)
        assert status == 0 and error is not None and error.startswith("refused: ")

    asyncio.run(main())


def test_abandoned_try_is_not_reported_and_connection_not_reused() -> None:
    async def main() -> None:
        hold = asyncio.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            await hold.wait()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool("127.0.0.1", port)
        rec = Recorder()
        handle_ = pool.send(rec, REQ)
        await asyncio.sleep(0.1)
        handle_.abandon()
        await asyncio.sleep(0.1)
        assert not rec.done.done()
        assert pool.idle_count == 0
        hold.set()
        server.close()

    asyncio.run(main())
