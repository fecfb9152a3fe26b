"""Writing one HTTP/1.1 response on a server connection: whole or streamed (chunked or fixed
length), corked so a head and its first body bytes leave in one segment, with the client's flow
control passed to whoever produces the body and abort callbacks for a client that goes away.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hanode.http.protocol import HttpServerProtocol

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))
        _STATUS_LINES[status] = line
    return line


class Responder:
    """Writes one response: whole (``send``) or streamed (``start``/``write``/``end``).

    ``on_abort`` callbacks run if the client goes away before the response ends, so whoever
    produces the body (an upstream relay, a simulated generation) can stop at once.
    """

    __slots__ = (
        "_conn",
        "_keep_alive",
        "_on_abort",
        "_streaming",
        "corked",
        "done",
        "head_only",
        "started",
    )

    def __init__(self, conn: HttpServerProtocol, keep_alive: bool, head_only: bool) -> None:
        self._conn = conn
        self._keep_alive = keep_alive
        self._on_abort: list[Callable[[], None]] | None = None
        self._streaming = False
        # Writes held back by cork(), None when not corked (a caller on the hot path may test
        # it to skip a call to uncork).
        self.corked: list[bytes] | None = None
        self.head_only = head_only
        self.started = False
        self.done = False

    def close_connection(self) -> None:
        """End the connection after this response (``connection: close``): a draining node
        tells keep-alive clients to go elsewhere."""
        self._keep_alive = False

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
            data = b"%x\r\n%s\r\n" % (len(data), data)
        if self.corked is not None:
            self.corked.append(data)
            return
        transport = self._conn.transport  # as _out, inline: this runs once per relayed read
        if transport is not None and not transport.is_closing():
            transport.write(data)

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
        if self.corked is None:
            self.corked = []

    def uncork(self) -> None:
        corked, self.corked = self.corked, None
        if corked:
            transport = self._conn.transport
            if transport is not None and not transport.is_closing():
                transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def _out(self, data: bytes) -> None:
        if self.corked is not None:
            self.corked.append(data)
            return
        transport = self._conn.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def abort(self) -> None:
        """Cut the connection: the client sees a truncated response, never a clean end."""
        if self.done:
            return
        self.done = True
        self.corked = None
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
