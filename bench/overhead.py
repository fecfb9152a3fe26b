"""Single-node proxy overhead: what hanode (and nginx) add to a request over a direct call.

Latency at concurrency 1, throughput and the proxy's CPU per request at concurrency 64 (wrk),
and whether a response's head and body leave the proxy in one write (a raw-socket client).
Rounds interleave the targets so a burst of background load hits all of them alike.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from bench import wrk
from bench.harness import HOST, BenchError, say
from bench.streaming import FirstChunkResult, connect
from bench.targets import MODEL, Targets

COMPLETION_BODY = json.dumps(
    {"model": MODEL, "prompt": "Say hello to the benchmark.", "max_tokens": 16},
    separators=(",", ":"),
)


@dataclass(slots=True)
class TargetResult:
    name: str
    port: int
    c1: wrk.WrkResult | None = None
    c64: wrk.WrkResult | None = None
    cpu_s: float | None = None
    stream: FirstChunkResult | None = None
    split_head: float | None = None  # share of responses whose head arrived alone

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.cpu_s is None or self.c64 is None or not self.c64.requests:
            return None
        return self.cpu_s * 1e3 / self.c64.requests


def wrk_summary(r: wrk.WrkResult) -> str:
    errs = f", errors {r.errors}" if r.errors else ""
    return f"{r.rps:,.0f} req/s, p50 {r.p50_us:.0f} us, p99 {r.p99_us:.0f} us{errs}"


def measure(
    t: Targets,
    results: dict[str, TargetResult],
    wrk_binary: str,
    scripts: dict[str, Path],
    rounds: int,
    per_round_s: float,
    warmup_s: float,
) -> None:
    """Warm-up, then c=1 rounds, framing, c=64 rounds with CPU; fills ``results``.

    ``scripts``: each target's wrk script (its body and the headers it needs)."""
    names = t.names
    for name in names:  # connections, code paths, upstream keep-alive pools
        r = wrk.run_wrk(wrk_binary, t.url(name), scripts[name], 64, warmup_s)
        say(f"warm-up {name}: {wrk_summary(r)}")

    c1: dict[str, list[wrk.WrkResult]] = {name: [] for name in names}
    for i in range(rounds):
        for name in names:
            r = wrk.run_wrk(wrk_binary, t.url(name), scripts[name], 1, per_round_s)
            c1[name].append(r)
            say(f"c=1 round {i + 1} {name}: {wrk_summary(r)}")
    for name in names:
        results[name].c1 = wrk.combine(c1[name])
        share = split_head_share(
            t.ports[name],
            "/v1/completions",
            COMPLETION_BODY.encode(),
            1000,
            headers=t.headers_of(name),
        )
        results[name].split_head = share
        say(f"framing {name}: {share:.0%} of responses had their head read without body")

    c64: dict[str, list[wrk.WrkResult]] = {name: [] for name in names}
    cpu: dict[str, float] = dict.fromkeys(names, 0.0)
    for i in range(rounds):
        for name in names:
            cpu0 = t.cpu_of[name]()
            r = wrk.run_wrk(wrk_binary, t.url(name), scripts[name], 64, per_round_s)
            used = t.cpu_of[name]() - cpu0
            cpu[name] += used
            c64[name].append(r)
            per = used * 1e3 / r.requests if r.requests else float("nan")
            say(f"c=64 round {i + 1} {name}: {wrk_summary(r)}, CPU {per:.4f} ms/request")
    for name in names:
        results[name].c64 = wrk.combine(c64[name])
        results[name].cpu_s = cpu[name]


def split_head_share(
    port: int,
    path: str,
    body: bytes,
    requests: int,
    timeout_s: float = 5.0,
    headers: dict[str, str] | None = None,
    time_limit_s: float = 3.0,
) -> float:
    """Share of responses whose first read held the head but no body byte.

    A server that writes head and body with one ``send`` delivers both in one TCP segment, so
    the client's first read sees both; one that writes them separately often wakes the client
    twice (two segments, two system calls on each side). At most ``requests`` requests or
    ``time_limit_s`` seconds (a slow proxy).
    """
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items()).encode()
    request = (
        b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n%s"
        % (path.encode(), HOST.encode(), port, extra, len(body), body)
    )
    split = done = 0
    deadline = time.monotonic() + time_limit_s
    sock = connect(port, timeout_s)
    try:
        for _ in range(requests):
            if time.monotonic() >= deadline:
                break
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
