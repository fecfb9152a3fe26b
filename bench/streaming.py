"""Streaming: how long a proxy holds back the first chunk of a streamed chat completion.

A blocking raw-socket client (no HTTP library between the clock and the bytes) sends a streamed
request over one keep-alive connection, stamps the first SSE ``data:`` bytes, reads the stream
to its end, and repeats; the simulators run at 1 ms per output token.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.harness import HOST, percentile, say
from bench.targets import MODEL, Targets

if TYPE_CHECKING:
    from bench.overhead import TargetResult

STREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "stream": True,
    },
    separators=(",", ":"),
)


@dataclass(frozen=True, slots=True)
class FirstChunkResult:
    samples_us: list[float]  # sorted
    errors: int

    @classmethod
    def merge(cls, parts: Sequence[FirstChunkResult]) -> FirstChunkResult:
        samples = sorted(s for p in parts for s in p.samples_us)
        return cls(samples, sum(p.errors for p in parts))

    @property
    def p50_us(self) -> float:
        return percentile(self.samples_us, 50)

    @property
    def p99_us(self) -> float:
        return percentile(self.samples_us, 99)


def connect(port: int, timeout_s: float) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_rest(sock: socket.socket, buf: bytearray, head_end: int, head: bytes) -> bool:
    """Read until the response ends; True if the connection may be reused."""
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while not buf.endswith(b"\r\n0\r\n\r\n") and not buf.endswith(b"\n0\r\n\r\n"):
            data = sock.recv(65536)
            if not data:
                return False
            buf += data
        return b"connection: close" not in lower
    m = re.search(rb"content-length:\s*(\d+)", lower)
    if m is not None:
        want = head_end + int(m.group(1))
        while len(buf) < want:
            data = sock.recv(65536)
            if not data:
                return False
            buf += data
        return b"connection: close" not in lower
    while sock.recv(65536):
        pass
    return False


def first_chunk_delays(
    port: int,
    path: str,
    body: bytes,
    iterations: int,
    time_limit_s: float,
    timeout_s: float = 5.0,
    headers: dict[str, str] | None = None,
) -> FirstChunkResult:
    """Time from sending a streamed request to receiving the first SSE ``data:`` bytes.

    One keep-alive connection (re-opened if the server closes it), one request at a time;
    the rest of each stream is read to its end before the next request is sent.
    """
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
    request = (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n%s"
        b"Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), HOST.encode(), port, extra, len(body), body)
    )
    samples: list[float] = []
    errors = 0
    sock: socket.socket | None = None
    deadline = time.monotonic() + time_limit_s
    try:
        for _ in range(iterations):
            if time.monotonic() >= deadline:
                break
            if sock is None:
                sock = connect(port, timeout_s)
            buf = bytearray()
            t0 = time.perf_counter_ns()
            reusable = False
            try:
                sock.sendall(request)
                head_end = -1
                first_at = 0
                while True:
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionError("closed before first chunk")
                    buf += data
                    if head_end < 0:
                        i = buf.find(b"\r\n\r\n")
                        if i < 0:
                            continue
                        head_end = i + 4
                        if not buf.startswith(b"HTTP/1.1 200"):
                            raise ConnectionError(bytes(buf[:40]).decode(errors="replace"))
                    if buf.find(b"data:", head_end) >= 0:
                        first_at = time.perf_counter_ns()
                        break
                head = bytes(buf[:head_end])
                reusable = _read_rest(sock, buf, head_end, head)
                if b"[DONE]" not in buf:
                    raise ConnectionError("stream ended without [DONE]")
                samples.append((first_at - t0) / 1e3)
            except (OSError, ConnectionError):
                errors += 1
                reusable = False
            if not reusable:
                with contextlib.suppress(OSError):
                    sock.close()
                sock = None
    finally:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
    samples.sort()
    return FirstChunkResult(samples, errors)


def measure(
    t: Targets,
    results: dict[str, TargetResult],
    rounds: int,
    iterations: int,
    time_limit_s: float,
) -> None:
    """Switch the simulators to tpot 1 ms, then interleave the targets over ``rounds``."""
    t.set_sim_timing(ttft_ms=0, tpot_ms=1)
    names = t.names
    streams: dict[str, list[FirstChunkResult]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            streams[name].append(
                first_chunk_delays(
                    t.ports[name],
                    "/v1/chat/completions",
                    STREAM_BODY.encode(),
                    iterations // rounds,
                    time_limit_s / rounds,
                    headers=t.headers_of(name),
                )
            )
    for name in names:
        fc = FirstChunkResult.merge(streams[name])
        results[name].stream = fc
        say(
            f"stream {name}: first chunk p50 {fc.p50_us:.0f} us, p99 {fc.p99_us:.0f} us "
            f"({len(fc.samples_us)} streams, {fc.errors} errors)"
        )
