"""The benchmark's one HTTP client: a keep-alive loopback connection, one per thread.

Measurements that poll fast (a breaker's state every few ms) or send load need a connection
that stays open, which :func:`hanode.devtools.procs.http_get` (one connection per call) is not;
one-shot calls (admin, waits) use that helper. Raw-socket clients that time bytes on the wire
live with the measurement they serve (:mod:`bench.streaming`, :mod:`bench.overhead`).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.harness import HOST, BenchError

ERRORS = (OSError, http.client.HTTPException)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class KeepAlive:
    """One keep-alive connection to ``127.0.0.1:port``.

    ``retry``: a request that fails on a connection the server closed is sent once more on a
    new one (pollers want that); load that counts client-visible errors sets it False.
    """

    def __init__(self, port: int, timeout_s: float = 2.0, retry: bool = True) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.retry = retry
        self.conn: http.client.HTTPConnection | None = None

    def exchange(self, method: str, path: str, body: bytes | None = None) -> Reply:
        for attempt in range(2 if self.retry else 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout_s)
            try:
                headers = {"content-type": "application/json"} if body is not None else {}
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                reply = Reply(
                    resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
                )
                if resp.will_close:
                    self.close()
                return reply
            except ERRORS:
                self.close()
                if attempt or not self.retry:
                    raise
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        reply = self.exchange(method, path, body)
        return reply.status, reply.body

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise BenchError(f"GET :{self.port}{path} -> {status}: {body[:200]!r}")
        return json.loads(body)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def breaker_state(status: dict[str, Any], replica: str) -> str:
    """The state of ``replica``'s breaker in an ops ``/status`` document."""
    for rep in status.get("replicas", []):
        if rep.get("name") == replica:
            breaker = rep.get("breaker", {})
            return str(breaker.get("state", "?")) if isinstance(breaker, dict) else str(breaker)
    return "missing"


def paced_load(
    ports: Sequence[int],
    path: str,
    body: bytes,
    rps: float,
    stop: threading.Event,
    counts: Counter[str],
) -> None:
    """One paced client per port, ``rps`` requests per second each, until ``stop`` is set."""

    def client(port: int) -> None:
        conn = KeepAlive(port, timeout_s=10.0)
        period = 1.0 / rps
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                status, _ = conn.request("POST", path, body)
                counts["ok" if status == 200 else f"http {status}"] += 1
            except ERRORS as exc:
                counts[type(exc).__name__] += 1
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()

    threads = [threading.Thread(target=client, args=(p,), daemon=True) for p in ports]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(15.0)
