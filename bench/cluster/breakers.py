"""Breaker propagation: one router opens a breaker -> when do the other routers have it open?

A simulator fails every request with a GPU OOM (``oom_trip_count`` 1: one OOM opens it, and an
OOM open is one that is replicated, as a duration), traffic goes through one node (the origin)
until its breaker opens, and the ops ``/status`` of every node is polled (~5 ms) to see when
the others show it open. The event line each node logs at its open transition gives the same
moments from each node's own clock (same machine). An operator reset then closes it everywhere
before the next run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import statistics
import threading
import time
from dataclasses import dataclass, field

from bench.client import ERRORS, KeepAlive, breaker_state
from bench.cluster.harness import BODY, Cluster, ClusterNode, poll
from bench.harness import BenchError


@dataclass(slots=True)
class PropagationSample:
    origin: str
    replica: str
    origin_is_leader: bool
    requests: int  # requests sent through the origin until its breaker opened
    polled_ms: dict[str, float] = field(default_factory=dict)  # peer -> delay, polled
    event_ms: dict[str, float] = field(default_factory=dict)  # peer -> delay, event clocks
    poll_gap_ms: float = float("nan")  # median time between two polls of one node


def watch_breaker(
    port: int,
    replica: str,
    want: str,
    interval_s: float,
    deadline: float,
    out: dict[str, float],
    gaps: list[float],
    key: str,
) -> None:
    """Poll ``/status`` until ``replica``'s breaker is ``want``; ``out[key]`` = when it was seen."""
    conn = KeepAlive(port)
    prev: float | None = None
    try:
        while time.monotonic() < deadline:
            began = time.monotonic()
            try:
                doc = conn.get_json("/status")
            except (*ERRORS, ValueError, BenchError):
                time.sleep(interval_s)
                continue
            done = time.monotonic()
            if prev is not None:
                gaps.append(done - prev)
            prev = done
            if breaker_state(doc, replica) == want:
                out[key] = done
                return
            time.sleep(max(0.0, interval_s - (time.monotonic() - began)))
    finally:
        conn.close()


def logged_open_at(node: ClusterNode, replica: str, log_from: int) -> float | None:
    """Wall-clock time of the node's first ``breaker ... -> open`` event log line for
    ``replica`` after character ``log_from`` of its log."""
    text = node.proc.output()[log_from:] if node.proc is not None else ""
    for line in text.splitlines():
        if '"breaker"' not in line or replica not in line:
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            doc = json.loads(line)
            if (
                doc.get("event") == "event"
                and doc.get("kind") == "breaker"
                and doc.get("subject") == replica
                and doc.get("to_state") == "open"
            ):
                return dt.datetime.fromisoformat(
                    doc["timestamp"].replace("Z", "+00:00")
                ).timestamp()
    return None


def propagate_once(c: Cluster, i: int) -> PropagationSample:
    """Run ``i``: the origin rotates over the nodes, the failing replica over all replicas."""
    s = c.s
    origin = c.nodes[i % len(c.nodes)]
    replica = c.replicas[i % len(c.replicas)]
    peers = [n for n in c.nodes if n is not origin]
    leader = c.wait_leader(c.nodes, 10.0)
    log_from = {n.name: len(n.proc.output()) if n.proc else 0 for n in c.nodes}
    c.sim_faults(replica, {"oom": 1.0})
    seen: dict[str, float] = {}
    gaps: list[float] = []
    deadline = time.monotonic() + 8.0
    watchers = [
        threading.Thread(
            target=watch_breaker,
            args=(n.ops_port, replica, "open", s.breaker_poll_s, deadline, seen, gaps, n.name),
            daemon=True,
        )
        for n in c.nodes
    ]
    for w in watchers:
        w.start()
    time.sleep(0.05)  # the watchers' first polls (closed) before the first request
    conn = KeepAlive(origin.router_port, timeout_s=10.0)
    sent = 0
    try:
        while origin.name not in seen and time.monotonic() < deadline and sent < 500:
            with contextlib.suppress(*ERRORS):
                conn.request("POST", "/v1/completions", BODY)
            sent += 1
    finally:
        conn.close()
    for w in watchers:
        w.join(10.0)
    sample = PropagationSample(origin.name, replica, origin.name == leader, sent)
    if origin.name not in seen:
        raise BenchError(f"cluster: {origin.name}'s breaker for {replica} never opened")
    for n in peers:
        if n.name in seen:
            sample.polled_ms[n.name] = (seen[n.name] - seen[origin.name]) * 1e3
    sample.poll_gap_ms = statistics.median(gaps) * 1e3 if gaps else float("nan")

    # The same moments from the nodes' own clocks: each router logs its open transition (an
    # "event" line, kind breaker); peers keep their forced opens out of the replicated event
    # log (the origin's open is there already), so the logs are where all three are.
    def opened_by_all() -> dict[str, float] | None:
        ts = {n.name: logged_open_at(n, replica, log_from[n.name]) for n in c.nodes}
        return {k: v for k, v in ts.items() if v is not None} if all(ts.values()) else None

    with contextlib.suppress(BenchError):
        stamps = poll(opened_by_all, 5.0, "breaker open logged by every node", 0.1)
        for n in peers:
            sample.event_ms[n.name] = (stamps[n.name] - stamps[origin.name]) * 1e3

    # Back to normal: the simulator recovers, an operator reset closes the breaker everywhere.
    c.sim_faults(replica, {"clear": True})
    c.reset_breaker(origin, replica)

    def closed_everywhere() -> bool:
        return all(breaker_state(n.status(), replica) == "closed" for n in c.nodes)

    poll(closed_everywhere, 10.0, f"{replica}'s breaker closed on every node", 0.02)
    return sample
