"""Helpers of the data-plane worker tests: which worker process holds a client's connection,
and clients that keep one connection each and remember who served them.

The owner of a connection is read from the kernel, as an operator would with ``ss -tnp``: the
server side of ``127.0.0.1:<client port>`` in ``/proc/net/tcp`` gives a socket inode, and the
worker whose ``/proc/<pid>/fd`` holds that inode owns it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

MODEL = "sim-model"
BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
).encode()


def _hex_addr(port: int) -> str:
    return f"0100007F:{port:04X}"  # 127.0.0.1 as /proc/net/tcp writes it (little endian)


def socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server side of the loopback connection from ``client_port``."""
    local, remote = _hex_addr(server_port), _hex_addr(client_port)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1] == local and parts[2] == remote:
                return int(parts[9])
    return None


def owner_of(server_port: int, client_port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` holds the server side of the connection, or None."""
    inode = socket_inode(server_port, client_port)
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == wanted:
                        return pid
    return None


@dataclass
class Outcome:
    owner: int | None  # the worker pid that held the connection (None: not known)
    ok: bool
    detail: str = ""


@dataclass
class KeepAliveClient:
    """One persistent connection; a failed request is recorded and the next one reconnects."""

    port: int
    pids: Iterable[int]
    body: bytes = BODY
    conn: http.client.HTTPConnection | None = None
    owner: int | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    def connect(self) -> None:
        self.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.conn.connect()
        assert self.conn.sock is not None
        client_port = self.conn.sock.getsockname()[1]
        self.owner = None
        for _ in range(50):  # the worker's accept may lag the client's connect a little
            self.owner = owner_of(self.port, client_port, list(self.pids))
            if self.owner is not None:
                break
            threading.Event().wait(0.01)

    def ask(self) -> Outcome:
        if self.conn is None:
            self.connect()
        assert self.conn is not None
        owner = self.owner
        try:
            self.conn.request(
                "POST", "/v1/chat/completions", self.body, {"content-type": "application/json"}
            )
            resp = self.conn.getresponse()
            body = resp.read()
            out = Outcome(owner, resp.status == 200, f"{resp.status} {body[-200:]!r}")
            if resp.getheader("connection", "").lower() == "close":
                self.close()
        except (OSError, http.client.HTTPException) as exc:
            out = Outcome(owner, False, repr(exc))
            self.close()
        self.outcomes.append(out)
        return out

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def spread_clients(
    port: int, pids: list[int], per_worker: int, limit: int = 200
) -> list[KeepAliveClient]:
    """Open connections until each worker holds ``per_worker`` of them (the kernel picks the
    worker by a hash of the address pair); the rest are closed. Bounded by ``limit``."""
    kept: dict[int, list[KeepAliveClient]] = {pid: [] for pid in pids}
    for _ in range(limit):
        if all(len(v) >= per_worker for v in kept.values()):
            break
        client = KeepAliveClient(port, pids)
        client.connect()
        if client.owner in kept and len(kept[client.owner]) < per_worker:
            kept[client.owner].append(client)
        else:
            client.close()
    missing = {pid: len(v) for pid, v in kept.items() if len(v) < per_worker}
    assert not missing, f"could not get {per_worker} connections on each worker: {missing}"
    return [c for v in kept.values() for c in v]
