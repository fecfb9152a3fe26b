"""Replica failover: one of three simulators is SIGKILLed under load through one hanode node.

Client threads (keep-alive, no retries of their own) send completions back to back; every
non-200 answer, answer without ``choices``, or exception is a client-visible error. The kill is
of our own simulator, by its pid.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.client import ERRORS, KeepAlive
from bench.harness import say
from bench.targets import Targets
from hanode.devtools.procs import http_get


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

    # filled in by measure(): what was killed and what hanode said afterwards
    killed: str = ""
    status_after: str = ""


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

    def client() -> None:
        conn = KeepAlive(port, timeout_s=timeout_s, retry=False)
        local: list[Sample] = []
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            replica = ""
            try:
                reply = conn.exchange("POST", path, body)
                replica = reply.headers.get("x-hanode-replica", "")
                if reply.status == 200 and b'"choices"' in reply.body:
                    kind, ok = "ok", True
                else:
                    kind, ok = f"HTTP {reply.status}", False
            except ERRORS as exc:
                kind, ok = type(exc).__name__, False
            local.append(Sample(t0 - t_begin, time.monotonic() - t0, ok, kind, replica))
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


def replica_states(ops_url: str) -> str:
    """``name: health, breaker state`` of every replica from hanode's /status."""
    try:
        status, _, body = http_get(ops_url + "/status")
        doc = json.loads(body) if status == 200 else {}
    except (OSError, ValueError) as exc:
        return f"/status unavailable ({exc})"
    parts = []
    for rep in doc.get("replicas", []):
        breaker = rep.get("breaker", {})
        state = breaker.get("state", "?") if isinstance(breaker, dict) else breaker
        parts.append(f"{rep.get('name')}: {rep.get('health')}, breaker {state}")
    return "; ".join(parts)


def measure(
    t: Targets, body: bytes, concurrency: int, duration_s: float, kill_at_s: float
) -> FailoverResult:
    """Kill simulator 2 (``sim2``) ``kill_at_s`` into ``duration_s`` of load through hanode."""
    victim = t.sims[2]
    fo = run_failover(
        t.node.router_port,
        "/v1/completions",
        body,
        concurrency,
        duration_s,
        kill_at_s,
        lambda: victim.kill(signal.SIGKILL),
    )
    fo.killed = "sim2"
    fo.status_after = replica_states(t.node.ops_url)
    errs = fo.errors()
    say(
        f"failover: {len(fo.samples)} requests, {sum(errs.values())} errors {dict(errs)}, "
        f"killed {fo.killed} at {fo.kill_at:.2f}s"
    )
    return fo
