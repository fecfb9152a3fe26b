"""The notify protocol against a socket playing systemd's side (issue 14)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hanode.pool.replica import AdminState, Observation, ReplicaSpec, Role
from hanode.pool.snapshot import PoolSnapshot, ReplicaState
from hanode.sdnotify import Notifier, watchdog_period_s
from hanode.service import status_line


class Manager:
    """The service manager's end: a datagram socket collecting (arrival, message) pairs."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.sock.bind(bind)
        self.sock.settimeout(5)

    def recv(self) -> str:
        return self.sock.recv(4096).decode()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Manager]:
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = f"@hanode-test-{uuid.uuid4().hex}"
    m = Manager(address)
    yield m
    m.close()


def test_ready_status_stopping(manager: Manager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address})
    assert n.active and n.watchdog_s is None
    n.ready("standalone; replicas 1 serving")
    ready = manager.recv().splitlines()
    assert ready[0] == "READY=1" and "STATUS=standalone; replicas 1 serving" in ready
    assert f"MAINPID={os.getpid()}" in ready
    n.status("standalone; replicas 0 serving")
    assert manager.recv() == "STATUS=standalone; replicas 0 serving"
    n.status("standalone; replicas 0 serving")  # unchanged: not sent again
    n.stopping("draining")
    assert manager.recv() == "STOPPING=1\nSTATUS=draining"
    n.close()


def test_without_a_manager_everything_is_a_no_op() -> None:
    n = Notifier({})
    assert not n.active and not n.send("READY=1")
    n.ready("x")
    n.start_watchdog(asyncio.new_event_loop())
    n.close()


def test_a_vanished_manager_is_not_an_error(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.active and not n.send("READY=1")


def test_watchdog_period_is_half_of_watchdog_usec() -> None:
    assert watchdog_period_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_period_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 1
    assert watchdog_period_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_period_s({"WATCHDOG_USEC": "x"}) is None
    assert watchdog_period_s({}) is None


def test_pings_come_from_the_event_loop_and_stop_while_it_is_blocked(manager: Manager) -> None:
    """WATCHDOG=1 every half period while the loop runs; none while a callback blocks it
    (so systemd restarts a stuck daemon), and again once it is free."""
    n = Notifier({"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "100000"})  # 50 ms
    arrivals: list[tuple[float, str]] = []
    stop = threading.Event()

    def collect() -> None:
        manager.sock.settimeout(0.2)
        while not stop.is_set():
            try:
                msg = manager.recv()
            except TimeoutError:
                continue
            arrivals.append((time.monotonic(), msg))

    reader = threading.Thread(target=collect)
    reader.start()
    blocked: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        n.start_watchdog(loop, lambda: "status line")
        while sum(1 for _, m in arrivals if m == "WATCHDOG=1") < 3:
            await asyncio.sleep(0.01)
        blocked.append(time.monotonic())
        time.sleep(0.6)  # the loop is stuck: twelve ping periods
        blocked.append(time.monotonic())
        seen = len(arrivals)
        while sum(1 for _, m in arrivals[seen:] if m == "WATCHDOG=1") < 2:
            await asyncio.sleep(0.01)

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        stop.set()
        reader.join()
        n.close()
    start, end = blocked
    # The ping due during the block is sent only once the loop runs again (at `end` or later).
    during = [t for t, m in arrivals if m == "WATCHDOG=1" and start < t < end]
    assert during == [], (start, end, arrivals)
    assert any(m == "STATUS=status line" for _, m in arrivals)
    assert sum(1 for t, m in arrivals if m == "WATCHDOG=1" and t >= end) >= 2


def _state(name: str, role: Role, weight: float) -> ReplicaState:

    spec = ReplicaSpec(name=name, model="m", url="http://127.0.0.1:1")
    return ReplicaState(spec, role, AdminState.ENABLED, Observation(), weight)


def test_status_line_counts() -> None:
    snap = PoolSnapshot.build(
        1,
        {
            "a": _state("a", Role.ACTIVE, 1.0),
            "b": _state("b", Role.ACTIVE, 0.0),
            "c": _state("c", Role.STANDBY, 0.0),
        },
    )
    assert status_line("leader", "n1", snap) == (
        "leader; leader n1; replicas 1 serving, 2 active, 1 standby (3)"
    )
    assert status_line("follower", None, snap).startswith("follower; no leader; ")
    assert status_line("standalone", None, snap).startswith("standalone; replicas 1 serving")
