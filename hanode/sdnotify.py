"""systemd's notify protocol, spoken directly: datagrams to ``$NOTIFY_SOCKET``.

``Type=notify`` units learn READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1 from these; no
library is needed (the protocol is one ``sendto`` of ``KEY=VALUE`` lines). ``@name`` is a
socket in the abstract namespace. Without ``NOTIFY_SOCKET`` (not under systemd) every call is a
no-op, so the daemon sends the same messages either way.

The watchdog is driven from the event loop on purpose: a loop that is stuck (a blocking call,
a busy callback) stops the pings, systemd sees ``WatchdogSec=`` pass and restarts the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping

import structlog

__all__ = ["Notifier", "watchdog_period_s"]

log = structlog.get_logger("hanode.sdnotify")

STATUS_EVERY_S = 5.0


def _address(value: str) -> str | bytes:
    if value.startswith("@"):  # abstract namespace
        return b"\0" + value[1:].encode()
    return value


def watchdog_period_s(env: Mapping[str, str]) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), None when systemd set no watchdog
    for this process (``WATCHDOG_PID`` names another one)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


class Notifier:
    """Sends notify messages to the service manager, if there is one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self._address = _address(path) if path else None
        self._sock: socket.socket | None = None
        self.watchdog_s = watchdog_period_s(env) if path else None
        self._ping: asyncio.TimerHandle | None = None
        self._last_status = ""
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def active(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; False when there is no manager or it
        could not be sent (never raises: a service manager gone is not our failure)."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=exc.strerror or str(exc))
            return False
        return True

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def start_watchdog(
        self, loop: asyncio.AbstractEventLoop, status: Callable[[], str] | None = None
    ) -> None:
        """Ping WATCHDOG=1 every half watchdog period from ``loop``, and refresh STATUS= (every
        STATUS_EVERY_S without a watchdog)."""
        if self._sock is None:
            return
        watchdog = self.watchdog_s
        period = watchdog if watchdog is not None else STATUS_EVERY_S

        def ping() -> None:
            if watchdog is not None:
                self.send("WATCHDOG=1")
            if status is not None:
                with contextlib.suppress(Exception):  # a status line is never worth a restart
                    self.status(status())
            self._ping = loop.call_later(period, ping)

        ping()

    def close(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
            self._ping = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
