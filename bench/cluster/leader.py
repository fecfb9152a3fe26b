"""Leader failover: SIGKILL the leader's hanode process (ours, by pid), poll the survivors'
``/status`` (~10 ms) until both name the same new leader, then restart the killed node on the
same config and wait until it has caught up and every replica is routable again.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from typing import Any

from bench.client import ERRORS, KeepAlive
from bench.cluster.harness import Cluster, poll
from bench.harness import BenchError


@dataclass(slots=True)
class FailoverSample:
    killed: str
    new_leader: str
    agreed_s: float  # kill -> both survivors name the same new leader
    first_change_s: float  # kill -> the first survivor stops naming the killed node
    planner_s: float | None  # kill -> the new leader's "is the leader" event (planner running)
    listening_s: float  # restart -> listening line
    caught_up_s: float  # restart -> follows the leader with its commit index


def failover_once(c: Cluster) -> FailoverSample:
    s = c.s
    killed = c.node(c.wait_leader(c.nodes, 15.0))
    survivors = [n for n in c.nodes if n is not killed]
    conns = {n.name: KeepAlive(n.ops_port, timeout_s=1.0) for n in survivors}
    proc = killed.proc
    if proc is None:
        raise BenchError(f"cluster: {killed.name} is not running")
    wall0 = time.time()
    t0 = time.monotonic()
    proc.kill(signal.SIGKILL)
    new_leader = ""
    agreed_at = changed_at = 0.0
    try:
        deadline = t0 + 30.0
        while time.monotonic() < deadline:
            names: list[Any] = []
            for n in survivors:
                try:
                    names.append(conns[n.name].get_json("/status").get("leader"))
                except (*ERRORS, ValueError, BenchError):
                    names.append(None)
            if not changed_at and any(x != killed.name for x in names):
                changed_at = time.monotonic()
            if names[0] and names[0] != killed.name and all(x == names[0] for x in names):
                agreed_at, new_leader = time.monotonic(), str(names[0])
                break
            time.sleep(s.leader_poll_s)
    finally:
        for conn in conns.values():
            conn.close()
    proc.wait_exit(10.0)
    proc.stop()
    if not new_leader:
        raise BenchError(f"cluster: no new leader within 30 s of killing {killed.name}")

    def planner_event() -> float | None:
        for e in c.node(new_leader).events():
            mine = e.get("kind") == "leader" and e.get("subject") == new_leader
            if mine and float(e["ts"]) >= wall0:
                return float(e["ts"])
        return None

    planner_at: float | None = None
    with contextlib.suppress(BenchError):
        planner_at = poll(planner_event, 5.0, "the new leader's leader event", 0.02)

    # Restart the killed node on the same config (same ports, same data dir).
    t_restart = time.monotonic()
    killed.spawn(c.group)
    listening_at = time.monotonic()
    leader_node = c.node(new_leader)

    def caught_up() -> bool:
        target = leader_node.commit_index()
        doc = killed.status()
        fresh = doc.get("freshness", {})
        return (
            doc.get("leader") == new_leader
            and bool(fresh.get("has_quorum"))
            and int(fresh.get("commit_index", 0)) >= target
        )

    poll(caught_up, 30.0, f"{killed.name} caught up with leader {new_leader}", 0.01)
    caught_up_at = time.monotonic()
    c.wait_serving(30.0)
    return FailoverSample(
        killed=killed.name,
        new_leader=new_leader,
        agreed_s=agreed_at - t0,
        first_change_s=changed_at - t0,
        planner_s=(planner_at - wall0) if planner_at is not None else None,
        listening_s=listening_at - t_restart,
        caught_up_s=caught_up_at - t_restart,
    )
