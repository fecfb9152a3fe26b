"""Pooled keep-alive connections to replicas, relaying without a task per request.

An :class:`Exchange` (the router's per-request state) is attached to a connection; the
connection's parser calls the exchange back for the response head, each body piece and the end.
Connections return to their pool when the replica keeps the connection alive. A request that
meets a dead pooled connection before any response byte is re-sent once on a fresh connection:
that is not a replica failure, only a keep-alive race.

A host that dies without a word (power, kernel, link: packets dropped, not refused) would hold
every pooled connection to it until the per-try timeout, which must stay long because a real
first token can take a minute. TCP keepalive and ``TCP_USER_TIMEOUT`` on every upstream socket
make the kernel fail such a connection within a few seconds (no acknowledgement at all, which a
live but busy host's kernel always sends), and the failure is reported as ``PEER_DEAD``.

A connect that fails for want of this router's own resources (file descriptors, local ports,
kernel buffers) is ``LOCAL``: it says nothing about the replica, and is never held against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import os
import socket
from collections.abc import Callable
from typing import Any, Protocol, cast

import httptools

# Dead-peer detection on upstream sockets (Linux; skipped where the options do not exist). An
# idle connection (waiting for a first token) is probed after KEEPALIVE_IDLE_S; a connection
# whose sent bytes or probes go unacknowledged for USER_TIMEOUT_S is failed by the kernel.
KEEPALIVE_IDLE_S = 2
KEEPALIVE_INTERVAL_S = 1
KEEPALIVE_COUNT = 3
USER_TIMEOUT_S = 5.0

# Errors that say "no answer from that host" rather than "the replica closed on us".
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
)


# Errors that say "this router is out of something": its own trouble, not the replica's.
_LOCAL_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL}
)


class TryError(enum.Enum):
    """How an upstream try failed without a complete response; the breaker and the retry
    logic treat them differently (see :mod:`hanode.policies.breaker`)."""

    LOST = "connection"  # the connection was reset or closed after it was made
    REFUSED = "connect_refused"  # connect refused: nothing listens there
    CONNECT_TIMEOUT = "connect_timeout"  # connect timed out, or no route to the host
    PEER_DEAD = "peer_dead"  # an established connection's peer stopped acknowledging
    CONNECT_ERROR = "connect_error"  # any other connect failure (name lookup, ...)
    LOCAL = "local_resources"  # this router ran out of fds, ports or buffers: no verdict

    @property
    def never_reached(self) -> bool:
        """No live replica took the request: no connection was made, or the host is gone."""
        return self is not TryError.LOST

    @property
    def unreachable(self) -> bool:
        """Trip the breaker at once, as evidence about the path (see the breaker module)."""
        return self is TryError.CONNECT_TIMEOUT or self is TryError.PEER_DEAD


def connect_error_kind(exc: BaseException) -> TryError:
    """Classify a failed connect."""
    if isinstance(exc, ConnectionRefusedError):
        return TryError.REFUSED
    if isinstance(exc, OSError) and (
        exc.errno in _LOCAL_ERRNOS or (isinstance(exc, socket.gaierror) and _no_free_fd())
    ):
        return TryError.LOCAL
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS
    ):
        return TryError.CONNECT_TIMEOUT
    return TryError.CONNECT_ERROR


def _no_free_fd() -> bool:
    """Is this process out of file descriptors? uvloop's resolver reports EMFILE as a failed
    name lookup; asked only on that (rare) error path."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
    except OSError as exc:
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    os.close(fd)
    return False


def lost_error_kind(exc: BaseException | None) -> TryError:
    """Classify the loss of an established connection: ETIMEDOUT there is the kernel giving up
    on an unacknowledging peer (keepalive or ``TCP_USER_TIMEOUT``)."""
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS:
        return TryError.PEER_DEAD
    return TryError.LOST


def tune_socket(sock: Any) -> None:
    """No Nagle delay, and dead-peer detection (see the module docstring)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
    if hasattr(socket, "TCP_KEEPINTVL"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
    if hasattr(socket, "TCP_KEEPCNT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(USER_TIMEOUT_S * 1000))


class Exchange(Protocol):
    """What a connection reports to. Implemented by the front door's request state."""

    def on_head(self, status: int, headers: dict[bytes, bytes], chunked: bool) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_complete(self) -> None: ...
    def on_error(self, message: str, kind: TryError) -> None: ...
    def flush(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_got_bytes",
        "_handle",
        "_headers",
        "_parser",
        "_payload",
        "_pool",
        "_reused",
        "exchange",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[bytes, bytes] = {}
        self.exchange: Exchange | None = None
        self._payload = b""
        self._got_bytes = False
        self._reused = False
        self._handle: UpstreamHandle | None = None

    # -- driving ---------------------------------------------------------------------------
    def send(
        self, exchange: Exchange, payload: bytes, handle: UpstreamHandle, reused: bool
    ) -> None:
        self.exchange = exchange
        self._handle = handle
        handle.conn = self
        self._payload = payload
        self._got_bytes = False
        self._reused = reused
        assert self.transport is not None
        self.transport.write(payload)

    def abandon(self) -> None:
        """The exchange no longer wants this response: the connection cannot be reused."""
        self.exchange = None
        self._handle = None
        if self.transport is not None:
            self.transport.close()

    def pause(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            tune_socket(sock)

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        exchange = self.exchange
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"malformed response from replica: {exc}")
        if exchange is not None:
            exchange.flush()  # what this read produced leaves in one write

    def eof_received(self) -> bool | None:
        if self.exchange is not None and self._got_bytes:
            # A body delimited by connection close ends here.
            with contextlib.suppress(httptools.HttpParserError):
                self._parser.feed_data(b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._pool.forget(self)
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        kind = lost_error_kind(exc)
        if (
            self._reused
            and not self._got_bytes
            and self._handle is not None
            and kind is TryError.LOST
        ):
            # Keep-alive race: the replica closed an idle connection as we reused it.
            self._handle.conn = None
            self._pool.connect(exchange, self._payload, self._handle)
            return
        exchange.on_error(f"connection to replica lost: {exc or 'closed by replica'}", kind)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            chunked = self._headers.get(b"transfer-encoding", b"").lower() == b"chunked"
            exchange.on_head(self._parser.get_status_code(), self._headers, chunked)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.on_body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        self.exchange = None
        self._payload = b""
        if self._handle is not None:
            self._handle.conn = None
            self._handle = None
        keep = self._parser.should_keep_alive()
        if keep and self.transport is not None and not self.transport.is_closing():
            self._pool.release(self)
        elif self.transport is not None:
            self.transport.close()
        if exchange is not None:
            exchange.on_complete()

    def _fail(self, message: str) -> None:
        exchange = self.exchange
        self.exchange = None
        if self.transport is not None:
            self.transport.close()
        if exchange is not None:
            exchange.on_error(message, TryError.LOST)


class UpstreamPool:
    """Idle keep-alive connections to one replica address."""

    def __init__(
        self,
        host: str,
        port: int,
        connect_timeout_s: float = 2.0,
        max_idle: int = 256,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        self._idle: list[UpstreamConnection] = []
        self._loop = asyncio.get_running_loop()

    def send(self, exchange: Exchange, payload: bytes) -> UpstreamHandle:
        """Send ``payload`` for ``exchange`` on an idle connection, or a new one."""
        handle = UpstreamHandle()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                conn.send(exchange, payload, handle, reused=True)
                return handle
        self.connect(exchange, payload, handle)
        return handle

    def connect(self, exchange: Exchange, payload: bytes, handle: UpstreamHandle) -> None:
        async def connect() -> None:
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    _, proto = await self._loop.create_connection(
                        lambda: UpstreamConnection(self), self.host, self.port
                    )
            except (OSError, TimeoutError) as exc:
                if not handle.abandoned:
                    kind = connect_error_kind(exc)
                    reason = str(exc) or (
                        f"no answer within {self.connect_timeout_s:g}s"
                        if isinstance(exc, TimeoutError)
                        else type(exc).__name__
                    )
                    exchange.on_error(f"cannot connect to replica: {reason}", kind)
                return
            if handle.abandoned:
                proto.abandon()
                return
            proto.send(exchange, payload, handle, reused=False)

        handle.connecting = self._loop.create_task(connect())

    def release(self, conn: UpstreamConnection) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def forget(self, conn: UpstreamConnection) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()


class UpstreamHandle:
    """The caller's grip on one in-flight upstream try: abandon it, or pause/resume reading."""

    __slots__ = ("abandoned", "conn", "connecting")

    def __init__(self) -> None:
        self.conn: UpstreamConnection | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.abandoned = False

    def abandon(self) -> None:
        self.abandoned = True
        if self.connecting is not None and not self.connecting.done():
            self.connecting.cancel()  # a connect to a dead host would wait out its timeout
        if self.conn is not None:
            self.conn.abandon()
            self.conn = None

    def flow_control(self) -> tuple[Callable[[], None], Callable[[], None]]:
        def pause() -> None:
            if self.conn is not None:
                self.conn.pause()

        def resume() -> None:
            if self.conn is not None:
                self.conn.resume()

        return pause, resume
