"""Upstream connection pool over real loopback sockets: reuse, keep-alive races, failures,
dead-peer socket options, and how connect failures are told apart."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Iterator

import pytest

from hanode.router import upstream
from hanode.router.upstream import TryError, UpstreamPool, connect_error_kind, lost_error_kind


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

    def on_error(self, message: str, kind: TryError) -> None:
        self.kind = kind
        self.done.set_result((0, b"", f"{kind.value}: {message}"))

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
        assert len(pool._idle) == 1
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
        assert status == 0 and error is not None and rec.kind is TryError.REFUSED
        assert rec.kind.never_reached and not rec.kind.unreachable

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
        assert len(pool._idle) == 0
        hold.set()
        server.close()

    asyncio.run(main())


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port whose SYNs go unanswered: a listener with a full accept queue drops them, as a
    dead host does (no root or packet filter needed on loopback)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=1.0)  # fills the queue
    try:
        yield port
    finally:
        filler.close()
        listener.close()


def test_connect_that_times_out_is_told_apart_from_refused() -> None:
    async def main() -> None:
        with silent_listener() as port:
            pool = UpstreamPool("127.0.0.1", port, connect_timeout_s=0.2)
            rec = Recorder()
            pool.send(rec, REQ)
            status, _, error = await asyncio.wait_for(rec.done, 3)
            assert status == 0 and rec.kind is TryError.CONNECT_TIMEOUT, error
            assert rec.kind.never_reached and rec.kind.unreachable
            assert error is not None and "0.2s" in error

    asyncio.run(main())


def test_abandoning_a_try_cancels_its_pending_connect() -> None:
    async def main() -> None:
        with silent_listener() as port:
            pool = UpstreamPool("127.0.0.1", port, connect_timeout_s=30.0)
            rec = Recorder()
            handle = pool.send(rec, REQ)
            task = handle.connecting
            assert task is not None
            await asyncio.sleep(0)  # the connect is under way
            handle.abandon()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 2.0)
            assert task.cancelled()
            assert not rec.done.done()

    asyncio.run(main())


def test_upstream_sockets_detect_dead_peers() -> None:
    """Keepalive and TCP_USER_TIMEOUT are set on every upstream connection (Linux)."""
    if not all(hasattr(socket, n) for n in ("TCP_KEEPIDLE", "TCP_USER_TIMEOUT")):
        pytest.skip("needs Linux TCP options")

    async def main() -> None:
        server, port, _ = await _serve(close_after_each=False)
        pool = UpstreamPool("127.0.0.1", port)
        rec = Recorder()
        pool.send(rec, REQ)
        assert await asyncio.wait_for(rec.done, 3) == (200, b"ok", None)
        conn = pool._idle[0]
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        tcp = socket.IPPROTO_TCP
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(tcp, socket.TCP_KEEPIDLE) == upstream.KEEPALIVE_IDLE_S
        assert sock.getsockopt(tcp, socket.TCP_KEEPINTVL) == upstream.KEEPALIVE_INTERVAL_S
        assert sock.getsockopt(tcp, socket.TCP_KEEPCNT) == upstream.KEEPALIVE_COUNT
        user_timeout_ms = sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT)
        assert user_timeout_ms == int(upstream.USER_TIMEOUT_S * 1000)
        assert sock.getsockopt(tcp, socket.TCP_NODELAY) != 0
        # "within a few seconds", yet far below a per-try timeout that must stay long
        idle_detect = upstream.KEEPALIVE_IDLE_S + upstream.KEEPALIVE_INTERVAL_S * (
            upstream.KEEPALIVE_COUNT
        )
        assert max(idle_detect, user_timeout_ms / 1000) <= 10
        pool.close()
        server.close()

    asyncio.run(main())


def test_error_kinds() -> None:
    assert connect_error_kind(ConnectionRefusedError()) is TryError.REFUSED
    assert connect_error_kind(TimeoutError()) is TryError.CONNECT_TIMEOUT
    no_route = OSError(errno.EHOSTUNREACH, "No route to host")
    assert connect_error_kind(no_route) is TryError.CONNECT_TIMEOUT
    # the router's own resources: never held against the replica
    assert connect_error_kind(OSError(errno.EMFILE, "Too many open files")) is TryError.LOCAL
    assert connect_error_kind(OSError(errno.EADDRNOTAVAIL, "no local port")) is TryError.LOCAL
    assert connect_error_kind(socket.gaierror(-2, "Name or service not known")) is (
        TryError.CONNECT_ERROR  # a real lookup failure: descriptors are free
    )
    # ETIMEDOUT on an established connection: the kernel gave up on an unacking peer
    assert lost_error_kind(OSError(errno.ETIMEDOUT, "Connection timed out")) is (TryError.PEER_DEAD)
    assert lost_error_kind(ConnectionResetError(errno.ECONNRESET, "reset")) is TryError.LOST
    assert lost_error_kind(None) is TryError.LOST
    assert not TryError.LOST.never_reached and not TryError.LOST.unreachable
    assert TryError.PEER_DEAD.never_reached and TryError.PEER_DEAD.unreachable
