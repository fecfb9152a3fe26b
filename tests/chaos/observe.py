"""What the chaos suite sees: client load through the routers, a monitor of every node's
consensus state, and the ledger of operator writes the cluster acknowledged."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tests.chaos.harness import (
    CLIENT_TIMEOUT_S,
    MODEL,
    ChaosCluster,
    Node,
)


# -- clients --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Req:
    t0: float  # monotonic, when sent
    dt: float
    node: str
    replica: str
    error: str


class Load:
    """Non-streamed chat completions through some nodes' routers, until stopped (bounded)."""

    MAX_PER_THREAD = 200_000

    def __init__(self, nodes: Sequence[Node], per_node: int = 2, max_s: float = 600.0) -> None:
        self.nodes = list(nodes)
        self.per_node = per_node
        self.max_s = max_s
        self.records: list[Req] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        for node in self.nodes:
            for _ in range(self.per_node):
                t = threading.Thread(target=self._drive, args=(node,), daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def _drive(self, node: Node) -> None:
        client = node.client()
        deadline = time.monotonic() + self.max_s
        for _ in range(self.MAX_PER_THREAD):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            t0 = time.monotonic()
            replica, error = "", ""
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "hello"}],
                    max_tokens=2,
                )
                out = raw.parse()
                replica = raw.headers.get("x-hanode-replica", "")
                if not (out.choices and out.choices[0].message.content):
                    error = "empty completion"
            except Exception as exc:
                error = f"{type(exc).__name__}: {str(exc)[:160]}"
            with self._lock:
                self.records.append(Req(t0, time.monotonic() - t0, node.name, replica, error))
            if error:  # do not spin on a refusing router
                self._stop.wait(0.05)

    def stop(self) -> list[Req]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=CLIENT_TIMEOUT_S + 5)
        return self.between()

    def between(self, t0: float = 0.0, t1: float = float("inf")) -> list[Req]:
        with self._lock:
            return [r for r in self.records if t0 <= r.t0 < t1]


# -- observation of consensus ---------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    t: float
    node: str
    leader: str | None
    term: int | None
    leader_term: int | None
    digest: str | None
    halted: Any
    lost: tuple[str, ...]


class Monitor:
    """Every node's /status (each 0.5 s) and /events (each 1 s), in one thread per node."""

    def __init__(self, cluster: ChaosCluster) -> None:
        self.cluster = cluster
        self.samples: list[Sample] = []
        self.events: dict[tuple[int, str], dict[str, Any]] = {}  # (seq, node seen on) -> event
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Monitor:
        for node in self.cluster.nodes:
            t = threading.Thread(target=self._watch, args=(node,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _watch(self, node: Node) -> None:
        after = 0
        next_events = 0.0
        for _ in range(100_000):
            if self._stop.is_set():
                return
            now = time.monotonic()
            try:
                doc = node.status(timeout=1.0)
                cons = doc.get("consensus") or {}
                lost = tuple(n["name"] for n in doc.get("nodes", []) if n.get("lost"))
                sample = Sample(
                    now,
                    node.name,
                    doc.get("leader"),
                    cons.get("term"),
                    cons.get("leader_term"),
                    cons.get("state_digest"),
                    cons.get("halted"),
                    lost,
                )
                with self._lock:
                    self.samples.append(sample)
            except Exception:
                pass
            if now >= next_events:
                next_events = now + 1.0
                try:
                    for event in node.events(after, timeout=1.0):
                        after = max(after, int(event["seq"]))
                        with self._lock:
                            self.events[(int(event["seq"]), node.name)] = event
                except Exception:
                    pass
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def all_events(self) -> list[dict[str, Any]]:
        with self._lock:
            unique = {}
            for (seq, _), event in sorted(self.events.items()):
                unique[seq] = event
            return [unique[k] for k in sorted(unique)]

    def since(self, t0: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.t >= t0]


# -- acknowledged writes --------------------------------------------------------------------------
class Ledger:
    """Drains and role changes the cluster acknowledged (hanodectl exit 0), and what is unsure.

    A write that failed or timed out has an unknown outcome (it may still commit): either
    value is accepted for that replica until a later acknowledged write settles it.
    """

    def __init__(self, cluster: ChaosCluster) -> None:
        self.cluster = cluster
        self.admin: dict[str, set[str]] = {}
        self.role: dict[str, set[str]] = {}
        self.acked = 0
        self.unsure = 0
        self.log: list[str] = []

    def _write(
        self, via: Node, table: dict[str, set[str]], replica: str, value: str, args: Sequence[str]
    ) -> bool:
        done = self.cluster.ctl(via, *args)
        if done.returncode == 0:
            table[replica] = {value}
            self.acked += 1
            self.log.append(f"{via.name}: {' '.join(args)} -> ok")
            return True
        table.setdefault(replica, set()).add(value)
        self.unsure += 1
        self.log.append(
            f"{via.name}: {' '.join(args)} -> rc={done.returncode} "
            f"{(done.stderr or done.stdout).strip()[:120]}"
        )
        return False

    def drain(self, via: Node, replica: str, on: bool = True) -> bool:
        value = "drained" if on else "enabled"
        return self._write(via, self.admin, replica, value, ["drain" if on else "undrain", replica])

    def role_of(self, via: Node, replica: str, role: str) -> bool:
        verb = "promote" if role == "active" else "demote"
        return self._write(via, self.role, replica, role, [verb, replica])

    def mismatches(self, docs: dict[str, dict[str, Any]]) -> list[str]:
        bad = []
        for node, doc in docs.items():
            reps = {r["name"]: r for r in doc.get("replicas", [])}
            for table, key in ((self.admin, "admin"), (self.role, "role")):
                for replica, allowed in table.items():
                    got = reps.get(replica, {}).get(key)
                    if got not in allowed:
                        bad.append(f"{node}: {replica}.{key}={got} (want {sorted(allowed)})")
        return bad
