"""A hardened TCP transport under pysyncobj: the Raft port faces whoever can reach it.

pysyncobj's own TCP transport trusts the network: it buffers whatever length a frame claims
(with a quadratic ``bytes +=``) before it tries to decrypt, keeps silent connections open for
ever (its timeout is only checked when data arrives), unbinds its listener for good on the
first EMFILE in ``accept()``, and binds 0.0.0.0 whatever host the node is named by. This module
keeps pysyncobj's protocol byte for byte (length prefix, zlib, Fernet, pickle) and changes who
may use how much of the node before proving it knows the secret:

- a frame's length is checked as soon as its 4-byte prefix arrives, before anything is
  buffered: at most ``PREAUTH_FRAME_BYTES`` until a frame has decrypted (the handshake is a
  32-byte key and an address), at most ``MAX_FRAME_BYTES`` after; a larger or negative one
  closes the connection. Buffers are ``bytearray`` (linear appends).
- a connection accepted from the network must finish the handshake within
  ``AUTH_DEADLINE_S``; at most ``MAX_PREAUTH`` wait at once (the oldest is shed first).
- ``accept()`` failing with EMFILE/ENFILE/ENOBUFS/ENOMEM pauses the listener (the socket stays
  bound) with a growing back-off, sheds the oldest half of the unauthenticated connections, and
  says so at warning level; an error on the listening socket itself rebinds it.
- the server binds the host of ``raft_listen`` (pysyncobj's ``bindAddress``).
- frames that do not decrypt, and peers that hang up during the handshake, are logged at
  warning level (rate-limited): that is what a wrong ``secret_file`` looks like.

The connection (framing, frame limits, decryption) is
:class:`~hanode.cluster.raft_connection.GuardedConnection`; this module is the listener
(:class:`GuardedServer`: accept, back-off, binding) and :class:`HardenedTransport` (the
handshake deadline, shedding, the warnings). It runs entirely in pysyncobj's thread (the
poller's callbacks and the tick).
"""

from __future__ import annotations

import errno
import functools
import socket
import time
from collections.abc import Callable
from typing import Any

import structlog
from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.node import TCPNode
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport, TransportNotReadyError

from hanode.cluster.raft_connection import (
    MAX_FRAME_BYTES,
    PREAUTH_FRAME_BYTES,
    RECVS_PER_EVENT,
    WARN_EVERY_S,
    FrameRefused,
    GuardedConnection,
    addr_family,
    warn_limit,
)

log = structlog.get_logger("hanode.raft.transport")

AUTH_DEADLINE_S = 3.0  # an accepted connection must finish the handshake by then
MAX_PREAUTH = 64  # unauthenticated connections held at once
ACCEPT_BACKOFF_S = (0.05, 1.0)  # first and longest pause of the listener under fd pressure
NO_PEER_WARN_S = 10.0  # warn when no peer has completed a handshake for this long
_LISTEN_BACKLOG = 128
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

__all__ = [
    "ACCEPT_BACKOFF_S",
    "AUTH_DEADLINE_S",
    "MAX_FRAME_BYTES",
    "MAX_PREAUTH",
    "NO_PEER_WARN_S",
    "PREAUTH_FRAME_BYTES",
    "WARN_EVERY_S",
    "FrameRefused",
    "GuardedConnection",
    "GuardedServer",
    "HardenedTransport",
]


class GuardedServer:
    """The Raft listener: accepts with back-off under fd pressure, never unbinds for good."""

    def __init__(
        self,
        poller: Any,
        host: str,
        port: int,
        on_new: Callable[[GuardedConnection], None],
        on_pressure: Callable[[], None],
        send_buffer: int,
        recv_buffer: int,
        timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self._poller = poller
        self._on_new = on_new
        self._on_pressure = on_pressure
        self._send_buffer = send_buffer
        self._recv_buffer = recv_buffer
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._fileno: int | None = None
        self._paused_until: float | None = None
        self._backoff = ACCEPT_BACKOFF_S[0]
        self._rebind_at: float | None = None
        self.pauses = 0
        self.rebinds = 0

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def bind(self) -> None:
        sock = socket.socket(addr_family(self.host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setblocking(False)
            sock.bind((self.host, self.port))
            sock.listen(_LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._fileno = sock.fileno()
        self._rebind_at = None
        self._listen()

    def unbind(self) -> None:
        self._rebind_at = None
        self._close()

    def _close(self) -> None:
        if self._fileno is not None:
            self._poller.unsubscribe(self._fileno)
            self._fileno = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _listen(self) -> None:
        assert self._fileno is not None
        self._poller.subscribe(
            self._fileno, self._on_event, POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
        )

    def tick(self) -> None:
        """Resume accepting after a pause; rebind a listener that failed."""
        now = time.monotonic()
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            if self._fileno is not None:
                self._listen()
        if self._rebind_at is not None and now >= self._rebind_at:
            try:
                self.bind()
            except OSError as exc:
                self._rebind_at = now + ACCEPT_BACKOFF_S[1]
                if warn_limit.ready("rebind"):
                    log.error("raft_rebind_failed", listen=self.address, error=str(exc))
            else:
                self.rebinds += 1
                log.warning("raft_listener_rebound", listen=self.address)

    def _on_event(self, descr: int, event: int) -> None:
        if event & POLL_EVENT_TYPE.ERROR:
            log.error("raft_listener_error", listen=self.address, detail="rebinding")
            self._close()
            self._rebind_at = time.monotonic() + ACCEPT_BACKOFF_S[0]
            return
        for _ in range(RECVS_PER_EVENT):
            sock = self._sock
            if sock is None:
                return
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRNOS:
                    self._pause(exc)
                    return
                continue  # ECONNABORTED and the like: that one connection is gone
            self._backoff = ACCEPT_BACKOFF_S[0]
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_buffer)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conn.setblocking(False)
            except OSError:
                conn.close()
                continue
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
            self._on_new(GuardedConnection(self._poller, conn, self._timeout, peer=peer))

    def _pause(self, exc: OSError) -> None:
        """Out of descriptors: stop polling the listener for a while (it stays bound, so
        peers' connects queue in the backlog) and let the transport shed pre-auth ones."""
        self.pauses += 1
        if warn_limit.ready("accept-pressure"):
            log.warning(
                "raft_accept_paused",
                listen=self.address,
                error=str(exc),
                pause_s=self._backoff,
                detail="out of file descriptors: shedding unauthenticated connections",
            )
        if self._fileno is not None:
            self._poller.unsubscribe(self._fileno)
        self._paused_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, ACCEPT_BACKOFF_S[1])
        self._on_pressure()


class HardenedTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport on :class:`GuardedConnection` and :class:`GuardedServer`."""

    _ready: bool  # pysyncobj's, set in its __init__
    _lastBindAttemptTime: float
    _bindAttempts: int

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        self._started = time.monotonic()
        self._ever_connected = False
        self._warned_no_peer_at = 0.0
        super().__init__(syncObj, selfNode, otherNodes)

    # -- server -------------------------------------------------------------------------------
    def _createServer(self) -> None:
        conf = self._syncObj.conf
        address = conf.bindAddress or self._selfNode.address
        host, port = address.rsplit(":", 1)
        host = host.strip("[]")
        if host not in ("0.0.0.0", "::"):
            host = globalDnsResolver().resolve(host) or host
        self._server = GuardedServer(
            self._syncObj._poller,
            host,
            int(port),
            self._onNewIncomingConnection,
            self._shed_preauth,
            conf.sendBufferSize,
            conf.recvBufferSize,
            conf.connectionTimeout,
        )

    def _maybeBind(self) -> None:
        if self._ready or self._selfIsReadonlyNode:
            return
        if time.monotonic() < self._lastBindAttemptTime + self._syncObj.conf.bindRetryTime:
            return
        self._lastBindAttemptTime = time.monotonic()
        try:
            self._server.bind()
        except OSError as exc:
            self._bindAttempts += 1
            if warn_limit.ready("bind"):
                log.error(
                    "raft_bind_failed",
                    key="[cluster].raft_listen",
                    listen=self._server.address,
                    error=exc.strerror or str(exc),
                )
            conf = self._syncObj.conf
            if conf.maxBindRetries and self._bindAttempts >= conf.maxBindRetries:
                self._bindOverEvent.set()
                raise TransportNotReadyError from None
        else:
            self._ready = True
            self._bindOverEvent.set()

    # -- connections --------------------------------------------------------------------------
    def addNode(self, node: Any) -> None:
        self._nodes.add(node)
        self._nodeAddrToNode[node.address] = node
        if self._shouldConnect(node):
            conf = self._syncObj.conf
            conn = GuardedConnection(
                self._syncObj._poller,
                timeout=conf.connectionTimeout,
                send_buffer=conf.sendBufferSize,
                recv_buffer=conf.recvBufferSize,
                peer=node.address,
            )
            conn.encryptor = self._syncObj.encryptor
            conn.setOnConnectedCallback(functools.partial(self._onOutgoingConnected, conn))
            conn.setOnMessageReceivedCallback(functools.partial(self._onMessageReceived, node))
            conn.setOnDisconnectedCallback(functools.partial(self._onDisconnected, conn))
            self._connections[node] = conn

    def _onNewIncomingConnection(self, conn: GuardedConnection) -> None:
        while len(self._unknownConnections) >= MAX_PREAUTH:
            oldest = min(self._unknownConnections, key=lambda c: c.created)
            self._unknownConnections.discard(oldest)
            oldest.disconnect()
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn: GuardedConnection, message: Any) -> None:
        super()._onIncomingMessageReceived(conn, message)
        if conn.state != CONNECTION_STATE.DISCONNECTED and conn not in self._unknownConnections:
            conn.authenticated = True  # identified as a member (the only way without a secret)
            self._ever_connected = True

    def _onOutgoingMessageReceived(self, conn: GuardedConnection, message: Any) -> None:
        super()._onOutgoingMessageReceived(conn, message)
        self._ever_connected = True

    def _onOutgoingConnected(self, conn: GuardedConnection) -> None:
        if not self._syncObj.encryptor:
            conn.authenticated = True  # a configured peer we dialled, no secret to prove
            self._ever_connected = True
        super()._onOutgoingConnected(conn)

    def _onDisconnected(self, conn: GuardedConnection) -> None:
        if (
            conn.established
            and not conn.authenticated
            and conn.peer in self._nodeAddrToNode
            and self._syncObj.encryptor
            and warn_limit.ready(f"handshake-{conn.peer}")
        ):
            log.warning(
                "raft_peer_rejected_handshake",
                peer=conn.peer,
                detail="the peer closed the connection before answering our handshake: it may "
                "use another [cluster].secret_file (or not be a hanode node)",
            )
        super()._onDisconnected(conn)

    def _shed_preauth(self) -> None:
        """Under fd pressure: drop the older half of the connections still unauthenticated."""
        waiting = sorted(self._unknownConnections, key=lambda c: c.created)
        for conn in waiting[: max(1, len(waiting) // 2)] if waiting else []:
            self._unknownConnections.discard(conn)
            conn.disconnect()

    def _onTick(self) -> None:
        super()._onTick()
        if self._server is not None:
            self._server.tick()
        now = time.monotonic()
        for conn in [c for c in self._unknownConnections if now - c.created > AUTH_DEADLINE_S]:
            self._unknownConnections.discard(conn)
            conn.disconnect()
        for conn in list(self._connections.values()):
            if conn.state == CONNECTION_STATE.CONNECTING and now - conn.created > conn.timeout:
                conn.disconnect()
        self._warn_if_alone(now)

    def _warn_if_alone(self, now: float) -> None:
        nodes = [n for n in self._nodes if isinstance(n, TCPNode)]
        if self._ever_connected or not nodes or now - self._started < NO_PEER_WARN_S:
            return
        if now - self._warned_no_peer_at < WARN_EVERY_S:
            return
        self._warned_no_peer_at = now
        log.warning(
            "raft_no_peer_reachable",
            seconds=round(now - self._started),
            peers=sorted(n.address for n in nodes),
            detail="no peer has completed a Raft handshake with this node: check [cluster].peers, "
            "that every node has the same [cluster].secret_file, and firewalls",
        )

    def preauth_count(self) -> int:
        return len(self._unknownConnections)

    @property
    def server(self) -> GuardedServer | None:
        server = self._server
        return server if isinstance(server, GuardedServer) else None
