"""One client connection of the HTTP/1.1 server: an asyncio Protocol fed by httptools.

No task per request: the parser calls back, the request is dispatched to the server's handler
with a :class:`~hanode.http.responder.Responder`. Keep-alive, pipelining order, chunked request
bodies, ``Expect: 100-continue``, the header/body size limits and the connection's one timer
(time to receive a request, idle keep-alive) live here.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import httptools

from hanode.http.request import Request
from hanode.http.responder import Responder, status_line

if TYPE_CHECKING:
    from hanode.http.server import HttpServer

MAX_PIPELINED = 16  # queued requests per connection before we stop reading from it

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


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

    @property
    def busy(self) -> bool:
        """A request of this connection is being answered (or waits to be)."""
        return self._current is not None or bool(self._pending)

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
