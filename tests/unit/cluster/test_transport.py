"""The Raft port against hostile and broken peers (issue 16, findings 3, 4, 5 and 13).

Each test talks to a real one- or two-node ``RaftStore`` on 127.0.0.1 with raw sockets, as the
adversarial run did: an oversized length prefix must close the connection before anything is
buffered, idle unauthenticated connections must be closed after the handshake deadline, the
listener must bind the configured host only, EMFILE in ``accept()`` must pause the listener and
not unbind it, and a peer with another secret must show at warning level.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
from pathlib import Path
from typing import Any

import structlog
from pysyncobj.poller import POLL_EVENT_TYPE

from hanode.cluster import transport
from hanode.cluster.raft_store import RaftStore
from hanode.devtools.procs import free_port

SECRET = "x" * 20
NODE = {"op": "register_node", "name": "n1", "raft": "h:1", "protocol": 1, "ts": 1.0}


async def _leader(store: RaftStore, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not store.status().is_leader:
        assert time.monotonic() < deadline, "a one-node cluster elects itself within seconds"
        await asyncio.sleep(0.05)


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the other side closes ``sock`` within ``timeout`` (EOF or reset)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sock.recv(4096) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def _listening_hosts(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    hosts = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        hexhost, hexport = local.split(":")
        if state == "0A" and int(hexport, 16) == port:
            raw = bytes.fromhex(hexhost)[::-1]
            hosts.add(socket.inet_ntoa(raw))
    return hosts


def test_an_oversized_length_prefix_is_refused_before_anything_is_buffered(
    tmp_path: Path,
) -> None:
    """Finding 3: 0x7fffffff then junk used to be buffered (quadratically) before decryption."""

    async def go() -> None:
        port = free_port()
        store = RaftStore(f"127.0.0.1:{port}", [], tmp_path, SECRET)
        try:
            await _leader(store)
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
                sock.sendall(struct.pack("i", 0x7FFFFFFF) + b"\0" * 65536)
                closed = await asyncio.to_thread(_closed_by_peer, sock, 3.0)
            assert closed, "the node kept buffering a frame it can never accept"
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
                sock.sendall(struct.pack("i", -5) + b"junk")
                assert await asyncio.to_thread(_closed_by_peer, sock, 3.0)
            await store.submit(dict(NODE), timeout=5.0)  # consensus still works
        finally:
            store.close()

    asyncio.run(go())


def test_idle_unauthenticated_connections_are_closed_after_the_handshake_deadline(
    tmp_path: Path,
) -> None:
    """Finding 4: idle pre-auth connections never timed out and piled up to EMFILE."""

    async def go() -> None:
        port = free_port()
        store = RaftStore(f"127.0.0.1:{port}", [], tmp_path, SECRET)
        socks: list[socket.socket] = []
        try:
            await _leader(store)
            socks = [socket.create_connection(("127.0.0.1", port), timeout=2.0) for _ in range(8)]
            limit = transport.AUTH_DEADLINE_S + 3.0
            closed = await asyncio.gather(
                *(asyncio.to_thread(_closed_by_peer, s, limit) for s in socks)
            )
            assert all(closed), f"{closed.count(False)} idle connections still open"
        finally:
            for s in socks:
                s.close()
            store.close()

    asyncio.run(go())


def test_the_raft_port_binds_the_configured_host_only(tmp_path: Path) -> None:
    """Finding 5: pysyncobj bound 0.0.0.0 whatever host raft_listen named."""

    async def go() -> None:
        port = free_port()
        store = RaftStore(f"127.0.0.1:{port}", [], tmp_path, SECRET)
        try:
            await _leader(store)
            assert _listening_hosts(port) == {"127.0.0.1"}
        finally:
            store.close()

    asyncio.run(go())


class _FlakyListener:
    """A listening socket whose accept() fails with EMFILE ``fails`` times first."""

    def __init__(self, sock: socket.socket, fails: int) -> None:
        self.sock = sock
        self.fails = fails

    def accept(self) -> tuple[socket.socket, Any]:
        if self.fails > 0:
            self.fails -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self.sock.accept()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class _Poller:
    def __init__(self) -> None:
        self.subscribed: dict[int, Any] = {}

    def subscribe(self, fd: int, callback: Any, events: int) -> None:
        self.subscribed[fd] = callback

    def unsubscribe(self, fd: int) -> None:
        self.subscribed.pop(fd, None)


def test_emfile_in_accept_pauses_the_listener_and_keeps_it_bound() -> None:
    """Finding 4: EMFILE in accept() used to unbind the listener for good."""
    poller = _Poller()
    accepted: list[transport.GuardedConnection] = []
    shed: list[int] = []
    port = free_port()
    server = transport.GuardedServer(
        poller, "127.0.0.1", port, accepted.append, lambda: shed.append(1), 2**16, 2**16, 2.0
    )
    server.bind()
    try:
        real = server._sock
        assert real is not None
        server._sock = _FlakyListener(real, fails=3)  # type: ignore[assignment]
        fd = real.fileno()
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as client:
            with structlog.testing.capture_logs() as logs:
                server._on_event(fd, POLL_EVENT_TYPE.READ)
            assert fd not in poller.subscribed and shed == [1]  # paused, pre-auth shed
            assert any(e["log_level"] == "warning" for e in logs), logs
            deadline = time.monotonic() + 5.0
            while not accepted and time.monotonic() < deadline:  # bounded: 5 s
                server.tick()
                if fd in poller.subscribed:
                    server._on_event(fd, POLL_EVENT_TYPE.READ)
                time.sleep(0.02)
            assert accepted, "the listener never accepted again"
            assert server.pauses == 3 and server._sock is not None
            client.sendall(b"")
        for conn in accepted:
            conn.disconnect()
    finally:
        server.unbind()


def test_a_peer_with_another_secret_is_reported_at_warning_level(tmp_path: Path) -> None:
    """Finding 13: a wrong secret showed only an info-level "no answer from the cluster"."""

    async def go() -> None:
        a, b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        with structlog.testing.capture_logs() as logs:
            one = RaftStore(a, [b], tmp_path / "a", SECRET)
            two = RaftStore(b, [a], tmp_path / "b", "y" * 20)
            try:
                deadline = time.monotonic() + 8.0
                seen: list[Any] = []
                while time.monotonic() < deadline and not seen:  # bounded: 8 s
                    await asyncio.sleep(0.1)
                    seen = [
                        e
                        for e in list(logs)
                        if e["log_level"] == "warning" and "secret_file" in str(e)
                    ]
                assert seen, "no warning names the secret"
            finally:
                one.close()
                two.close()

    asyncio.run(go())


def test_a_small_frame_that_does_not_decrypt_closes_the_connection(tmp_path: Path) -> None:
    async def go() -> None:
        port = free_port()
        store = RaftStore(f"127.0.0.1:{port}", [], tmp_path, SECRET)
        try:
            await _leader(store)
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
                sock.sendall(struct.pack("i", 10) + b"0123456789")
                assert await asyncio.to_thread(_closed_by_peer, sock, 3.0)
        finally:
            store.close()

    asyncio.run(go())
