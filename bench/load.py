"""Load generators: wrk (latency, throughput), a raw-socket first-chunk client, failover load."""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import HOST, BenchError

# --------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------

LUA = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}
_PCT_RE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_REQS_RE = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
_RPS_RE = re.compile(r"Requests/sec:\s+([\d.]+)")
_SOCK_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def write_lua(path: Path, body: str) -> Path:
    if "'" in body or "\\" in body:
        raise ValueError("body must not contain quotes or backslashes (Lua single-quoted string)")
    path.write_text(LUA.format(body=body))
    return path


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    pct_us: dict[int, float]  # 50/75/90/99 -> microseconds
    errors: dict[str, int]  # connect/read/write/timeout/non2xx, non-zero only
    raw: str
    rounds: tuple[WrkResult, ...] = ()  # when combined from several runs

    @property
    def p50_us(self) -> float:
        return self.pct_us.get(50, float("nan"))

    @property
    def p99_us(self) -> float:
        return self.pct_us.get(99, float("nan"))

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def parse_wrk(text: str) -> WrkResult:
    m = _REQS_RE.search(text)
    rps = _RPS_RE.search(text)
    if m is None or rps is None:
        raise BenchError(f"cannot parse wrk output:\n{text}")
    pct = {int(p): float(v) * _UNITS[u] for p, v, u in _PCT_RE.findall(text)}
    errors: dict[str, int] = {}
    sock = _SOCK_RE.search(text)
    if sock is not None:
        for name, value in zip(("connect", "read", "write", "timeout"), sock.groups(), strict=True):
            if int(value):
                errors[name] = int(value)
    non2xx = _NON2XX_RE.search(text)
    if non2xx is not None and int(non2xx.group(1)):
        errors["non2xx"] = int(non2xx.group(1))
    return WrkResult(
        requests=int(m.group(1)),
        duration_s=float(m.group(2)) * _UNITS[m.group(3)] / 1e6,
        rps=float(rps.group(1)),
        pct_us=pct,
        errors=errors,
        raw=text,
    )


def combine(results: Sequence[WrkResult]) -> WrkResult:
    """Rounds of one measurement: totals add up, percentiles are the median of the rounds'."""
    if not results:
        raise ValueError("nothing to combine")
    requests = sum(r.requests for r in results)
    duration = sum(r.duration_s for r in results)
    pct: dict[int, float] = {}
    for p in results[0].pct_us:
        values = sorted(r.pct_us[p] for r in results if p in r.pct_us)
        pct[p] = statistics.median(values)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
    return WrkResult(
        requests=requests,
        duration_s=duration,
        rps=requests / duration if duration else 0.0,
        pct_us=pct,
        errors=dict(errors),
        raw="\n".join(r.raw for r in results),
        rounds=tuple(results),
    )


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    connections: int,
    duration_s: float,
    threads: int = 1,
) -> WrkResult:
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    if res.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
    return parse_wrk(res.stdout)


# --------------------------------------------------------------------------------------------
# percentiles
# --------------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[k])


# --------------------------------------------------------------------------------------------
# first chunk of a stream
# --------------------------------------------------------------------------------------------


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


def _connect(port: int, timeout_s: float) -> socket.socket:
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
) -> FirstChunkResult:
    """Time from sending a streamed request to receiving the first SSE ``data:`` bytes.

    One keep-alive connection (re-opened if the server closes it), one request at a time;
    the rest of each stream is read to its end before the next request is sent.
    """
    request = (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), HOST.encode(), port, len(body), body)
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
                sock = _connect(port, timeout_s)
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


# --------------------------------------------------------------------------------------------
# framing: does a whole response leave the proxy in one write?
# --------------------------------------------------------------------------------------------


def split_head_share(
    port: int, path: str, body: bytes, requests: int, timeout_s: float = 5.0
) -> float:
    """Share of responses whose first read held the head but no body byte.

    A server that writes head and body with one ``send`` delivers both in one TCP segment, so
    the client's first read sees both; one that writes them separately often wakes the client
    twice (two segments, two system calls on each side).
    """
    request = (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), HOST.encode(), port, len(body), body)
    )
    split = done = 0
    sock = _connect(port, timeout_s)
    try:
        for _ in range(requests):
            sock.sendall(request)
            buf = bytearray()
            first = True
            while True:
                data = sock.recv(65536)
                if not data:
                    raise BenchError(f"port {port} closed the connection")
                buf += data
                i = buf.find(b"\r\n\r\n")
                if first and i >= 0:
                    split += len(buf) == i + 4
                    first = False
                if i < 0:
                    continue
                m = re.search(rb"content-length:\s*(\d+)", bytes(buf[:i]).lower())
                if m is None:
                    raise BenchError(f"port {port}: response without content-length")
                if len(buf) >= i + 4 + int(m.group(1)):
                    break
            done += 1
    finally:
        sock.close()
    return split / done if done else float("nan")


# --------------------------------------------------------------------------------------------
# failover: load with a client pool while a replica is killed
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    start: float  # seconds since the run began
    latency_s: float
    ok: bool
    kind: str  # "ok", "HTTP 502", "RemoteDisconnected", ...
    replica: str


@dataclass(slots=True)
class FailoverResult:
    samples: list[Sample] = field(default_factory=list)
    kill_at: float = 0.0
    duration_s: float = 0.0

    def errors(self) -> Counter[str]:
        return Counter(s.kind for s in self.samples if not s.ok)

    def latencies_ms(self) -> list[float]:
        return sorted(s.latency_s * 1e3 for s in self.samples)

    def around_kill(self, before_s: float = 0.5, after_s: float = 3.0) -> list[Sample]:
        """Requests in flight at the kill or started within ``after_s`` of it."""
        lo, hi = self.kill_at - before_s, self.kill_at + after_s
        return [s for s in self.samples if s.start + s.latency_s >= lo and s.start <= hi]

    def replicas_after(self, delay_s: float = 1.0) -> Counter[str]:
        return Counter(s.replica for s in self.samples if s.ok and s.start > self.kill_at + delay_s)


def run_failover(
    port: int,
    path: str,
    body: bytes,
    concurrency: int,
    duration_s: float,
    kill_at_s: float,
    kill: Callable[[], None],
    timeout_s: float = 10.0,
) -> FailoverResult:
    """``concurrency`` threads, each a keep-alive client sending requests back to back."""
    result = FailoverResult(duration_s=duration_s)
    lock = threading.Lock()
    t_begin = time.monotonic()
    stop_at = t_begin + duration_s
    headers = {"content-type": "application/json"}

    def client() -> None:
        conn: http.client.HTTPConnection | None = None
        local: list[Sample] = []
        while time.monotonic() < stop_at:
            if conn is None:
                conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
            current = conn
            t0 = time.monotonic()
            replica = ""
            try:
                current.request("POST", path, body=body, headers=headers)
                resp = current.getresponse()
                data = resp.read()
                replica = resp.getheader("x-hanode-replica", "") or ""
                if resp.status == 200 and b'"choices"' in data:
                    kind, ok = "ok", True
                else:
                    kind, ok = f"HTTP {resp.status}", False
                if resp.will_close:
                    current.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                kind, ok = type(exc).__name__, False
                current.close()
                conn = None
            local.append(Sample(t0 - t_begin, time.monotonic() - t0, ok, kind, replica))
        if conn is not None:
            conn.close()
        with lock:
            result.samples.extend(local)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, t_begin + kill_at_s - time.monotonic()))
    result.kill_at = time.monotonic() - t_begin
    kill()
    for t in threads:
        t.join(duration_s + timeout_s + 5)
    result.samples.sort(key=lambda s: s.start)
    return result
