"""One Raft peer connection under pysyncobj, with bounded frames and a handshake clock.

pysyncobj's own ``TcpConnection`` buffers whatever length a frame claims (with a quadratic
``bytes +=``) before it tries to decrypt. :class:`GuardedConnection` keeps pysyncobj's protocol
byte for byte (length prefix, zlib, Fernet, pickle) and checks a frame's length as soon as its
4-byte prefix arrives, before anything is buffered: at most ``PREAUTH_FRAME_BYTES`` until a
frame has decrypted (the handshake is a 32-byte key and an address), at most
``MAX_FRAME_BYTES`` after; a larger or negative one closes the connection. Buffers are
``bytearray`` (linear appends). Frames that do not decrypt are logged at warning level
(rate-limited by :data:`warn_limit`, shared with :mod:`hanode.cluster.transport`).

The listener, the handshake deadline and the accept back-off are in
:mod:`hanode.cluster.transport`. It runs entirely in pysyncobj's thread.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

import pysyncobj.pickle as raft_pickle
import structlog
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE

log = structlog.get_logger("hanode.raft.transport")

MAX_FRAME_BYTES = 64 * 2**20  # an authenticated peer: log entries, snapshot chunks
PREAUTH_FRAME_BYTES = 64 * 2**10  # before any frame decrypted: a random key or an address
WARN_EVERY_S = 30.0  # the same warning at most this often
RECVS_PER_EVENT = 64  # bounded work per readiness event
_LEN = struct.Struct("i")  # pysyncobj's native signed length prefix


class RateLimit:
    """At most one log line per key every ``every`` seconds."""

    def __init__(self, every: float = WARN_EVERY_S) -> None:
        self.every = every
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.every:
            return False
        if len(self._last) > 1024:
            self._last.clear()
        self._last[key] = now
        return True


warn_limit = RateLimit()


class FrameRefused(Exception):
    """A peer sent something this transport will not process."""


class GuardedConnection:
    """pysyncobj's ``TcpConnection`` interface with bounded frames and a handshake clock.

    ``authenticated`` is set once a frame has decrypted with the cluster's secret (or, without
    a secret, once the transport knows which peer this is); until then frames are small."""

    def __init__(
        self,
        poller: Any,
        sock: socket.socket | None = None,
        timeout: float = 10.0,
        send_buffer: int = 2**16,
        recv_buffer: int = 2**16,
        peer: str = "",
    ) -> None:
        self.sendRandKey: bytes | None = None
        self.recvRandKey: bytes | None = None
        self.recvLastTimestamp = 0
        self.encryptor: Any = None
        self.authenticated = False
        self.established = False  # TCP connected (the handshake may still be pending)
        self.peer = peer
        self.created = time.monotonic()
        self.last_read = self.created
        self._poller = poller
        self.timeout = timeout
        self._send_buffer = send_buffer
        self._recv_buffer = recv_buffer
        self._read = bytearray()
        self._write = bytearray()
        self._on_message: Callable[[Any], None] | None = None
        self._on_connected: Callable[[], None] | None = None
        self._on_disconnected: Callable[[], None] | None = None
        self._sock = sock
        self._fileno: int | None = None
        self._state = CONNECTION_STATE.DISCONNECTED
        if sock is not None:
            self._fileno = sock.fileno()
            self._state = CONNECTION_STATE.CONNECTED
            self.established = True
            self._subscribe(POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR)

    # -- pysyncobj's interface ----------------------------------------------------------------
    def setOnConnectedCallback(self, cb: Callable[[], None] | None) -> None:
        self._on_connected = cb

    def setOnMessageReceivedCallback(self, cb: Callable[[Any], None] | None) -> None:
        self._on_message = cb

    def setOnDisconnectedCallback(self, cb: Callable[[], None] | None) -> None:
        self._on_disconnected = cb

    @property
    def state(self) -> int:
        return int(self._state)

    def fileno(self) -> int | None:
        return self._fileno

    def getSendBufferSize(self) -> int:
        return len(self._write)

    def connect(self, host: str | None, port: int) -> bool:
        if host is None:
            return False
        self.disconnect()
        self._read = bytearray()
        self._write = bytearray()
        self.established = False
        self.authenticated = False
        self.created = self.last_read = time.monotonic()
        try:
            sock = socket.socket(addr_family(host), socket.SOCK_STREAM)
        except OSError as exc:  # EMFILE here must not reach pysyncobj's tick
            if warn_limit.ready(f"connect-{exc.errno}"):
                log.warning("raft_connect_failed", peer=self.peer, error=str(exc))
            return False
        self._sock = sock
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._recv_buffer)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            sock.connect((host, port))
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                self._close_socket()
                return False
        self._fileno = sock.fileno()
        self._state = CONNECTION_STATE.CONNECTING
        self._subscribe(POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR)
        return True

    def send(self, message: Any) -> None:
        if self.sendRandKey:
            message = (self.sendRandKey, message)
        data = zlib.compress(raft_pickle.dumps(message), 3)
        if self.encryptor:
            data = self.encryptor.encrypt_at_time(data, int(time.monotonic()))
        self._write += _LEN.pack(len(data))
        self._write += data
        self._flush()

    def disconnect(self) -> None:
        notify = self._on_disconnected is not None and self._state != (
            CONNECTION_STATE.DISCONNECTED
        )
        self.sendRandKey = None
        self.recvRandKey = None
        self.recvLastTimestamp = 0
        self._close_socket()
        self._write = bytearray()
        self._read = bytearray()
        self._state = CONNECTION_STATE.DISCONNECTED
        if notify and self._on_disconnected is not None:
            self._on_disconnected()

    # -- internals ----------------------------------------------------------------------------
    def _close_socket(self) -> None:
        if self._fileno is not None:
            self._poller.unsubscribe(self._fileno)
            self._fileno = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _subscribe(self, events: int) -> None:
        assert self._fileno is not None
        self._poller.subscribe(self._fileno, self._on_event, events)

    def _on_event(self, descr: int, event: int) -> None:
        if descr != self._fileno:
            self._poller.unsubscribe(descr)
            return
        if event & POLL_EVENT_TYPE.ERROR:
            self.disconnect()
            return
        sock = self._sock
        assert sock is not None
        if self._state == CONNECTION_STATE.CONNECTING:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.disconnect()
                return
            self._state = CONNECTION_STATE.CONNECTED
            self.established = True
            self.last_read = time.monotonic()
            if self._on_connected is not None:
                self._on_connected()
            if self._state == CONNECTION_STATE.DISCONNECTED:
                return
            self._resubscribe()
            return
        if self._timed_out():
            return
        if event & POLL_EVENT_TYPE.WRITE:
            self._flush()
            if self._state == CONNECTION_STATE.DISCONNECTED:
                return
        if event & POLL_EVENT_TYPE.READ:
            self._receive()

    def _timed_out(self) -> bool:
        """pysyncobj's dead-peer rule, kept: nothing read for ``timeout`` while we have had
        something to do with the connection (an event, a send) closes it."""
        if time.monotonic() - self.last_read > self.timeout:
            self.disconnect()
            return True
        return False

    def _resubscribe(self) -> None:
        if self._fileno is None:
            return
        events = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.ERROR
        if self._write:
            events |= POLL_EVENT_TYPE.WRITE
        self._subscribe(events)

    def _flush(self) -> None:
        sock = self._sock
        if sock is None or self._state != CONNECTION_STATE.CONNECTED:
            return
        if self._timed_out():
            return
        while self._write:
            try:
                sent = sock.send(self._write)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.disconnect()
                return
            if sent <= 0:
                break
            del self._write[:sent]
        self._resubscribe()

    def frame_limit(self) -> int:
        return MAX_FRAME_BYTES if self.authenticated else PREAUTH_FRAME_BYTES

    def _receive(self) -> None:
        for _ in range(RECVS_PER_EVENT):
            sock = self._sock
            if sock is None:
                return
            try:
                chunk = sock.recv(self._recv_buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.disconnect()
                return
            if not chunk:
                self.disconnect()
                return
            self.last_read = time.monotonic()
            self._read += chunk
            try:
                self._deliver()
            except FrameRefused as exc:
                host = self.peer.rsplit(":", 1)[0]
                if warn_limit.ready(f"refused-{host}-{str(exc)[:24]}"):
                    log.warning("raft_frame_refused", peer=self.peer, reason=str(exc))
                self.disconnect()
                return
            if self._state == CONNECTION_STATE.DISCONNECTED:
                return

    def _deliver(self) -> None:
        """Hand every complete frame in the buffer to pysyncobj; refuse an oversized one as
        soon as its prefix is known (nothing more of it is buffered)."""
        while len(self._read) >= _LEN.size:
            (length,) = _LEN.unpack_from(self._read)
            if length < 0 or length > self.frame_limit():
                raise FrameRefused(
                    f"frame of {length} bytes announced (limit {self.frame_limit()}"
                    f"{'' if self.authenticated else ' before authentication'})"
                )
            if len(self._read) - _LEN.size < length:
                return
            data = bytes(self._read[_LEN.size : _LEN.size + length])
            del self._read[: _LEN.size + length]
            message = self._decode(data)
            if self._on_message is not None:
                self._on_message(message)
            if self._state == CONNECTION_STATE.DISCONNECTED:
                return

    def _decode(self, data: bytes) -> Any:
        if self.encryptor:
            try:
                stamp = self.encryptor.extract_timestamp(data)
                plain = self.encryptor.decrypt(data)
            except Exception:
                raise FrameRefused(
                    "a frame did not decrypt with this node's secret (a peer with another "
                    "[cluster].secret_file, or not a hanode peer)"
                ) from None
            if stamp < self.recvLastTimestamp:
                raise FrameRefused("a frame older than the previous one (replayed?)")
            self.recvLastTimestamp = stamp
            self.authenticated = True
            data = plain
        try:
            message = raft_pickle.loads(zlib.decompress(data))
            if self.recvRandKey:
                key, message = message
                if key != self.recvRandKey:
                    raise ValueError("wrong connection key")
        except Exception as exc:
            raise FrameRefused(f"a frame that is not a pysyncobj message ({exc!r:.80})") from None
        return message


def addr_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
