"""A small, fast HTTP/1.1 server on asyncio Protocols and the httptools parser.

Why not a framework: the front door relays tens of thousands of stream chunks per second on a
GPU host, so a request must cost microseconds. There is no task per request: the parser calls us
back, we call the handler, and the handler writes through a :class:`Responder`. Keep-alive,
pipelining order, chunked request bodies, ``Expect: 100-continue`` and the input limits
(header size, body size, time to receive a request, idle keep-alive, connection cap) live here
so every server in hanode (front door, simulator, metrics) gets them the same way.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import httptools

Handler = Callable[["Request", "Responder"], None]

MAX_PIPELINED = 16  # queued requests per connection before we stop reading from it


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 4 * 1024 * 1024
    # A whole request must arrive within this (slowloris guard): counted from the connection's
    # opening for its first request, from the first byte for later ones.
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0  # keep-alive connection with nothing to do
    max_connections: int = 4096  # at the cap, the oldest idle keep-alive connection makes room


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
        _STATUS_LINES[status] = line
    return line


class Request:
    """One parsed request. Header names are lower-case bytes; the last value of a repeat wins."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "peer")

    def __init__(
        self,
        method: bytes,
        path: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        keep_alive: bool,
        peer: Any,
    ) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.peer = peer


class Responder:
    """Writes one response: whole (``send``) or streamed (``start``/``write``/``end``).

    ``on_abort`` callbacks run if the client goes away before the response ends, so whoever
    produces the body (an upstream relay, a simulated generation) can stop at once.
    """

    __slots__ = (
        "_conn",
        "_corked",
        "_keep_alive",
        "_on_abort",
        "_streaming",
        "done",
        "head_only",
        "started",
    )

    def __init__(self, conn: HttpServerProtocol, keep_alive: bool, head_only: bool) -> None:
        self._conn = conn
        self._keep_alive = keep_alive
        self._on_abort: list[Callable[[], None]] | None = None
        self._streaming = False
        self._corked: list[bytes] | None = None
        self.head_only = head_only
        self.started = False
        self.done = False

    # -- whole responses -------------------------------------------------------------------
    def send(
        self,
        status: int,
        body: bytes = b"",
        content_type: bytes = b"application/json",
        extra_headers: bytes = b"",
    ) -> None:
        """Send a complete response. ``extra_headers`` is raw ``Name: value\\r\\n`` lines."""
        if self.started or self.done:
            return
        self.started = True
        conn_hdr = b"" if self._keep_alive else b"connection: close\r\n"
        head = b"%scontent-type: %s\r\ncontent-length: %d\r\n%s%s\r\n" % (
            status_line(status),
            content_type,
            len(body),
            conn_hdr,
            extra_headers,
        )
        transport = self._conn.transport
        if transport is not None and not transport.is_closing():
            transport.write(head if self.head_only else head + body)
        self._finish()

    # -- streamed responses ----------------------------------------------------------------
    def start(
        self,
        status: int,
        content_type: bytes = b"text/event-stream",
        extra_headers: bytes = b"",
        content_length: int | None = None,
    ) -> None:
        """Send the head of a streamed response: chunked, or fixed length if known."""
        if self.started or self.done:
            return
        self.started = True
        self._streaming = content_length is None
        framing = (
            b"transfer-encoding: chunked\r\n"
            if content_length is None
            else b"content-length: %d\r\n" % content_length
        )
        conn_hdr = b"" if self._keep_alive else b"connection: close\r\n"
        self._out(
            b"%scontent-type: %s\r\n%s%s%s\r\n"
            % (status_line(status), content_type, framing, conn_hdr, extra_headers)
        )

    def write(self, data: bytes) -> None:
        """Send part of the body now (one chunk when chunked). Empty data is ignored."""
        if self.done or not data or self.head_only:
            return
        if self._streaming:
            self._out(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self._out(data)

    def end(self) -> None:
        if self.done:
            return
        if self._streaming and not self.head_only:
            self._out(b"0\r\n\r\n")
        self.uncork()
        self._finish()

    # -- coalescing writes ---------------------------------------------------------------------
    def cork(self) -> None:
        """Hold writes until :meth:`uncork`: a head and body that arrive together leave in one
        segment (one syscall) instead of two."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked:
            transport = self._conn.transport
            if transport is not None and not transport.is_closing():
                transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def _out(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
            return
        transport = self._conn.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def abort(self) -> None:
        """Cut the connection: the client sees a truncated response, never a clean end."""
        if self.done:
            return
        self.done = True
        self._corked = None
        self._conn.close()

    # -- flow control and lifetime -----------------------------------------------------------
    def on_abort(self, callback: Callable[[], None]) -> None:
        if self._on_abort is None:
            self._on_abort = []
        self._on_abort.append(callback)

    def set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        """Let a body producer pause while the client's socket buffer is full."""
        self._conn.flow = (pause, resume)

    def _finish(self) -> None:
        self.done = True
        self._on_abort = None
        self._conn.response_done(self._keep_alive)

    def _aborted(self) -> None:
        callbacks, self._on_abort = self._on_abort, None
        self.done = True
        if callbacks:
            for cb in callbacks:
                cb()


class HttpServerProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "_body",
        "_body_size",
        "_current",
        "_deadline",
        "_expect_continue",
        "_head_size",
        "_headers",
        "_in_request",
        "_last_request",
        "_loop",
        "_parser",
        "_pending",
        "_server",
        "_timer",
        "_trailers",
        "_url",
        "flow",
        "peer",
        "transport",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = server.loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._head_size = 0
        self._in_request = False
        self._trailers = False  # past the head: header callbacks now are chunked trailers
        self._expect_continue = False  # a 100 owed once this request is the one answered
        self._last_request = False
        self._pending: deque[Request] = deque()
        self._current: Responder | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self.flow: tuple[Callable[[], None], Callable[[], None]] | None = None
        self.peer: Any = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = self._server
        server.connections.add(self)
        if len(server.connections) > server.limits.max_connections and not server.make_room():
            self._reject(503, b"too many connections")
            return
        # Until a first request arrives, a connection gets the request deadline, not the idle
        # one: connections that never send must not hold the cap for idle_timeout_s.
        self._arm(server.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        server = self._server
        server.connections.discard(self)
        server.idle.pop(self, None)
        self._drop_timer()
        self.transport = None
        current, self._current = self._current, None
        if current is not None and not current.done:
            current._aborted()
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # We ignore Upgrade (allowed by HTTP/1.1) and answer in HTTP/1.1, but the parser
            # cannot go on after it: close once the answers already queued are sent.
            self._last_request = True
            if self._current is None and not self._pending:
                self.close()
        except httptools.HttpParserError as exc:
            if self.transport is not None and not self.transport.is_closing():
                self._reject(400, b"malformed HTTP request: " + str(exc).encode()[:200])

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow[0]()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow[1]()

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._head_size = 0
        self._in_request = True
        self._trailers = False
        # Waiting on keep-alive: this request's time starts now. (A first request's time
        # started with the connection, a pipelined one's when its turn came.)
        if self._server.idle.pop(self, False):
            self._arm(self._server.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        # Chunked trailers come through here too: counted, never merged into the headers the
        # request was authorized and routed by.
        if not self._trailers:
            self._headers[name.lower()] = value
        self._count_head(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        self._trailers = True
        limits = self._server.limits
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            self._reject(413, b"request body is larger than %d bytes" % limits.max_body_bytes)
            return
        if self._headers.get(b"expect", b"").lower() == b"100-continue" and self.transport:
            if self._current is None and not self._pending:
                self.transport.write(_CONTINUE)
            else:  # pipelined: a 100 now would land inside the response being sent
                self._expect_continue = True

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._server.limits.max_body_bytes:
            self._reject(
                413, b"request body is larger than %d bytes" % self._server.limits.max_body_bytes
            )
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_request = False
        self._expect_continue = False  # the body came without it
        if self.transport is None or self.transport.is_closing():
            return
        parser = self._parser
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(
            parser.get_method(),
            self._url,
            self._headers,
            body,
            parser.should_keep_alive(),
            self.peer,
        )
        if self._current is None and not self._pending:
            self._dispatch(request)
        else:
            # Pipelined: answer in order once the current response is done. Stop reading
            # while the queue is full so a client cannot make us hold unbounded requests.
            self._pending.append(request)
            if len(self._pending) >= MAX_PIPELINED:
                self.transport.pause_reading()

    # -- internals -------------------------------------------------------------------------
    def _count_head(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self._server.limits.max_header_bytes:
            limit = self._server.limits.max_header_bytes
            self._reject(431, b"request headers are larger than %d bytes" % limit)
            raise httptools.HttpParserError("headers too large")

    def _dispatch(self, request: Request) -> None:
        self._cancel_timer()
        responder = Responder(self, request.keep_alive, request.method == b"HEAD")
        self._current = responder
        try:
            self._server.handler(request, responder)
        except Exception as exc:  # a handler bug must cost one request, not the process
            self._server.on_handler_error(exc)
            if not responder.started:
                responder.send(500, b'{"error":{"message":"internal error","type":"server_error"}}')
            else:
                responder.abort()

    def response_done(self, keep_alive: bool) -> None:
        self._current = None
        self.flow = None
        transport = self.transport
        if transport is None:
            return
        if not keep_alive or (self._last_request and not self._pending):
            transport.close()
            return
        if self._pending:
            # Next pipelined request from the loop, not from inside this call chain: a long
            # queue of instant answers must not grow the stack.
            self._loop.call_soon(self._dispatch_pending)
        elif self._in_request:  # the next request is arriving: its turn starts its time
            if self._expect_continue:
                self._expect_continue = False
                transport.write(_CONTINUE)
            self._arm(self._server.limits.header_timeout_s)
        else:
            self._server.idle[self] = True
            self._arm(self._server.limits.idle_timeout_s)

    def _dispatch_pending(self) -> None:
        transport = self.transport
        if self._current is not None or not self._pending or transport is None:
            return
        if transport.is_closing():
            self._pending.clear()
            return
        self._dispatch(self._pending.popleft())
        if len(self._pending) < MAX_PIPELINED:
            transport.resume_reading()

    def _reject(self, status: int, message: bytes) -> None:
        """Answer a protocol-level refusal in OpenAI's error shape and close the connection."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._current is None or not self._current.started:
            kind = b"invalid_request_error" if status < 500 else b"server_error"
            body = b'{"error":{"message":"%s","type":"%s","param":null,"code":null}}' % (
                message.replace(b"\\", b"\\\\").replace(b'"', b'\\"'),
                kind,
            )
            transport.write(
                b"%scontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status_line(status), len(body), body)
            )
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # One timer handle per connection, moved lazily: arming and disarming on every request
    # only store a deadline; the handle, when it fires early, re-schedules itself.
    def _arm(self, delay: float) -> None:
        self._deadline = deadline = self._loop.time() + delay
        timer = self._timer
        if timer is not None and timer.when() > deadline:  # the new deadline comes sooner
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        self._deadline = None

    def _drop_timer(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self.transport is None:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timer)
            return
        self._deadline = None
        if self._current is not None:
            return
        if self._in_request:
            self._reject(408, b"request was not received in time")
        else:
            self.close()


class HttpServer:
    """Owns the listening socket and the set of live connections."""

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits | None = None,
        on_handler_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits or ServerLimits()
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpServerProtocol] = set()
        # Keep-alive connections waiting for their next request, oldest idle first.
        self.idle: dict[HttpServerProtocol, bool] = {}
        self.on_handler_error = on_handler_error or (lambda exc: None)
        self._server: asyncio.base_events.Server | None = None

    def make_room(self) -> bool:
        """At the cap: close the connection idle the longest, so a new client gets in rather
        than a 503 (an idle keep-alive client reconnects when it has something to ask)."""
        if not self.idle:
            return False
        oldest = next(iter(self.idle))
        del self.idle[oldest]
        self.connections.discard(oldest)
        oldest.close()
        return True

    async def listen(self, host: str, port: int, backlog: int = 1024) -> tuple[str, int]:
        """Start listening; returns the bound address (useful with port 0)."""
        self._server = await self.loop.create_server(
            lambda: HttpServerProtocol(self), host, port, backlog=backlog, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
