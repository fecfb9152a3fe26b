"""Event-loop start-up shared by every hanode process (daemon, simulator, demo)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], event_loop: str = "uvloop") -> T:
    """Run ``main`` on uvloop when it is installed (it halves per-request overhead)."""
    if event_loop == "asyncio":
        return asyncio.run(main)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Set ``stop`` on SIGTERM/SIGINT so services can shut down cleanly."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def install_stall_drill() -> bool:
    """Rehearse a stuck event loop (the watchdog drill): with ``HANODE_STALL_DRILL_S=N`` set,
    SIGUSR2 makes the loop itself block for N seconds while every other thread (consensus, the
    kernel's accept queue) goes on, which is what a blocking call on the loop looks like. Unset
    (the default and any production start) it installs nothing. Returns whether it did."""
    text = os.environ.get("HANODE_STALL_DRILL_S", "")
    try:
        seconds = float(text)
    except ValueError:
        return False
    if not 0 < seconds <= 600:
        return False
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, time.sleep, seconds)
    return True
