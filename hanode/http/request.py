"""One parsed HTTP request, as the server's Protocol hands it to a handler."""

from __future__ import annotations

from typing import Any


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
