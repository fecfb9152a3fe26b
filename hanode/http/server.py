"""A small, fast HTTP/1.1 server on asyncio Protocols and the httptools parser.

Why not a framework: the front door relays tens of thousands of stream chunks per second on a
GPU host, so a request must cost microseconds. There is no task per request: the parser calls us
back, we call the handler, and the handler writes through a Responder. The pieces:
``request.py`` (the parsed request), ``responder.py`` (writing the response), ``protocol.py``
(one connection: parsing, keep-alive, pipelining, ``Expect: 100-continue``, size limits and
timers) and this module (the listening socket, the limits, the connection cap), so every server
in hanode (front door, simulator, metrics) gets them the same way.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hanode.http.protocol import HttpServerProtocol
from hanode.http.request import Request
from hanode.http.responder import Responder

Handler = Callable[["Request", "Responder"], None]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 4 * 1024 * 1024
    # A whole request must arrive within this (slowloris guard): counted from the connection's
    # opening for its first request, from the first byte for later ones.
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 75.0  # keep-alive connection with nothing to do
    max_connections: int = 4096  # at the cap, the oldest idle keep-alive connection makes room


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

    async def listen(
        self, host: str, port: int, backlog: int = 1024, tls: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        """Start listening (HTTPS with ``tls``); returns the bound address (useful with port
        0). A TLS handshake counts against ``header_timeout_s`` like the request after it."""
        return await self._serve(tls, host=host, port=port, backlog=backlog, reuse_address=True)

    async def listen_socket(
        self, sock: socket.socket, tls: ssl.SSLContext | None = None
    ) -> tuple[str, int]:
        """Serve on a socket the caller bound and made listen (a data-plane worker's
        SO_REUSEPORT socket on the node's router port); returns its address."""
        return await self._serve(tls, sock=sock)

    async def _serve(self, tls: ssl.SSLContext | None, **where: Any) -> tuple[str, int]:
        self._server = await self.loop.create_server(
            lambda: HttpServerProtocol(self),
            ssl=tls,
            ssl_handshake_timeout=self.limits.header_timeout_s if tls is not None else None,
            **where,
        )
        sockname = self._server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    def busy(self) -> int:
        """Connections with a request being answered (a graceful stop waits for none)."""
        return sum(1 for conn in self.connections if conn.busy)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
