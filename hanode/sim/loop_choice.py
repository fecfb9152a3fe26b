"""Pick the event loop: uvloop through ``hanode.runtime.run`` when our HTTP server works on it.

``hanode.http.server`` (and ``hanode.http.client``) assert ``isinstance(transport,
asyncio.Transport)`` in ``connection_made``; uvloop's TCPTransport is not a subclass, so every
connection is reset under uvloop. Until that is fixed upstream, a quick loopback self-test decides:
uvloop if a request gets an answer, plain asyncio (with a warning on stderr) otherwise. Once the
server accepts uvloop transports this module can shrink to ``hanode.runtime.run``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from hanode.http.server import HttpServer, Request, Responder
from hanode.runtime import run

T = TypeVar("T")
PROBE_TIMEOUT_S = 2.0


async def _server_answers() -> bool:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, _ctx: None)  # the failure is the expected output

    def handler(request: Request, responder: Responder) -> None:
        responder.send(200, b"")

    server = HttpServer(handler)
    host, port = await server.listen("127.0.0.1", 0)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET / HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n")
            data = await reader.read(32)
            writer.close()
            return data.startswith(b"HTTP/1.1 200")
    except (OSError, TimeoutError):
        return False
    finally:
        await server.close()


_UVLOOP_OK: bool | None = None


def uvloop_usable() -> bool:
    global _UVLOOP_OK
    if _UVLOOP_OK is None:
        try:
            _UVLOOP_OK = run(_server_answers())
        except Exception:
            _UVLOOP_OK = False
    return _UVLOOP_OK


def run_main(main: Coroutine[Any, Any, T], event_loop: str = "uvloop") -> T:
    """Run ``main`` on uvloop (``hanode.runtime.run``) when possible, else on asyncio."""
    if event_loop == "uvloop":
        if uvloop_usable():
            return run(main)
        print(
            "hanode sim: hanode.http.server does not work on uvloop here "
            "(transport isinstance assert); falling back to asyncio",
            file=sys.stderr,
            flush=True,
        )
    return asyncio.run(main)
