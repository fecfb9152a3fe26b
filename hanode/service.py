"""What a node tells its service manager, and how it stops gracefully.

``status_line`` is the ``STATUS=`` text systemd shows in ``systemctl status``; ``drain_router``
is the first half of a graceful stop: the front door answers new requests 503 with
``connection: close`` (clients and load balancers go to another node) while the requests in
flight finish, for at most ``[router].drain_timeout_s``.
"""

from __future__ import annotations

import asyncio

import structlog

from hanode.http.server import HttpServer
from hanode.pool.replica import Role
from hanode.pool.snapshot import PoolSnapshot
from hanode.router.frontdoor import FrontDoor

__all__ = ["DRAIN_POLL_S", "drain_router", "status_line"]

log = structlog.get_logger("hanode.service")

DRAIN_POLL_S = 0.05


def status_line(role: str, leader: str | None, snapshot: PoolSnapshot) -> str:
    """``leader; leader n1; replicas 2 serving, 2 active, 1 standby (3)``."""
    states = snapshot.replicas.values()
    serving = sum(len(route.names) for route in snapshot.routes.values())
    active = sum(1 for s in states if s.role is Role.ACTIVE)
    standby = sum(1 for s in states if s.role is Role.STANDBY)
    parts = [role]
    if role != "standalone":
        parts.append(f"leader {leader}" if leader else "no leader")
    parts.append(
        f"replicas {serving} serving, {active} active, {standby} standby ({len(snapshot.replicas)})"
    )
    return "; ".join(parts)


async def drain_router(
    door: FrontDoor, server: HttpServer, timeout_s: float, notice_s: float = 0.0
) -> int:
    """Refuse new requests and wait for those in flight, and at least ``notice_s`` (load
    balancers see /health answer 503 before the port closes); returns how many were still
    being answered when ``timeout_s`` ran out (0: all finished)."""
    door.draining = True
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + max(timeout_s, notice_s)
    busy = server.busy()
    log.info("router_draining", in_flight=busy, timeout_s=timeout_s, notice_s=notice_s)
    while (busy or loop.time() < start + notice_s) and loop.time() < deadline:
        await asyncio.sleep(DRAIN_POLL_S)
        busy = server.busy()
    if busy:
        log.warning("router_drain_timeout", still_in_flight=busy, timeout_s=timeout_s)
    else:
        log.info("router_drained")
    return busy
