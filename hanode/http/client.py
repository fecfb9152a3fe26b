"""A small one-shot async HTTP/1.1 client for probes, metric scrapes and admin calls.

Each call opens its own connection and closes it: probes must see a refused connection as a
refused connection, not hide it behind a pooled socket. The hot path does not use this module
(see ``hanode.router.upstream``). Bodies are capped so a misbehaving peer cannot exhaust memory.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

MAX_RESPONSE_BYTES = 8 * 1024 * 1024


class HttpClientError(Exception):
    """Connection refused/reset, timeout, malformed or oversized response."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def split_url(url: str) -> tuple[str, int, str]:
    """``http://host:port/path`` -> (host, port, path)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only http://host:port URLs are supported, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 80, path


class _ResponseProtocol(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[Response], limit: int) -> None:
        self._done = done
        self._limit = limit
        self._parser = httptools.HttpResponseParser(self)
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._size = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpClientError(f"malformed response: {exc}"))

    def eof_received(self) -> bool | None:
        # A response without a length ends at EOF; let the parser know.
        with contextlib.suppress(httptools.HttpParserError):
            self._parser.feed_data(b"")
        if not self._done.done():
            self._fail(HttpClientError("connection closed before the response ended"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._fail(HttpClientError(f"connection lost: {exc or 'closed'}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._limit:
            self._fail(HttpClientError(f"response larger than {self._limit} bytes"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._done.done():
            status = self._parser.get_status_code()
            self._done.set_result(Response(status, self._headers, b"".join(self._body)))
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        if not self._done.done():
            self._done.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


async def request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    limit: int = MAX_RESPONSE_BYTES,
) -> Response:
    """Send one request and return the whole response, within ``timeout`` seconds in total."""
    host, port, path = split_url(url)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Response] = loop.create_future()
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}:{port}", "connection: close"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"content-length: {len(body)}")
        if not headers or not any(k.lower() == "content-type" for k in headers):
            lines.append("content-type: application/json")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                transport, _ = await loop.create_connection(
                    lambda: _ResponseProtocol(done, limit), host, port
                )
            except OSError as exc:
                raise HttpClientError(f"connect to {host}:{port} failed: {exc}") from exc
            transport.write(payload)
            return await done
    except TimeoutError as exc:
        raise HttpClientError(f"no response from {host}:{port} within {timeout}s") from exc
    finally:
        if transport is not None:
            transport.close()
        if not done.done():
            done.cancel()
        elif not done.cancelled() and done.exception() is not None:
            pass  # retrieved, so asyncio does not warn about it
