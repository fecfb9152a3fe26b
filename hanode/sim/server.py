"""Process life of ``hanode sim``: refuse, listen, announce, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import traceback

import orjson

from hanode.http.server import HttpServer
from hanode.runtime import stop_on_signals
from hanode.sim.handlers import SimApp
from hanode.sim.options import SimOptions

CLOSE_TIMEOUT_S = 5.0


def _log_handler_error(exc: Exception) -> None:
    traceback.print_exception(exc, file=sys.stderr)


def announce(event: dict[str, object]) -> None:
    """One JSON line on stdout, flushed: how scripts and tests follow the process's life."""
    sys.stdout.write(orjson.dumps(event).decode() + "\n")
    sys.stdout.flush()


async def serve(options: SimOptions, stop: asyncio.Event | None = None) -> int:
    """Run one simulated replica until ``stop`` is set (by default: on SIGTERM/SIGINT)."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        stop_on_signals(stop)
    if options.refuse_s > 0:
        announce({"event": "refusing", "seconds": options.refuse_s})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), options.refuse_s)
        if stop.is_set():
            return 0
    app = SimApp(options, loop)
    server = HttpServer(app.handle, on_handler_error=_log_handler_error)
    host, port = await server.listen(options.host, options.port)
    announce({"event": "listening", "host": host, "port": port})
    try:
        await stop.wait()
    finally:
        app.shutdown()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.close(), CLOSE_TIMEOUT_S)
    return 0
