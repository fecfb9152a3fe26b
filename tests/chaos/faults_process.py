"""Chaos faults of processes and hosts: host death, a frozen leader, kill/restart loops, full
restarts and restarts after log compaction."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from tests.chaos.harness import (
    Node,
    wait_for,
)
from tests.chaos.observe import (
    Load,
)
from tests.chaos.suite import (
    FaultResult,
    Suite,
    common_checks,
    hold,
    warm_load,
)


def host_death(suite: Suite, res: FaultResult) -> None:
    """A follower's host dies under load (link down, every process SIGKILLed), then returns."""
    t0 = time.monotonic()
    leader = wait_for(suite.leader, 20)[0]
    if leader is None:
        raise RuntimeError("no leader before the fault")
    victim = next(n for n in reversed(suite.nodes) if n is not leader)
    survivors = [n for n in suite.nodes if n is not victim]
    gone = {victim.replica("a"), victim.replica("b")}
    suite.ledger_write(survivors[0])
    load = Load(survivors, per_node=3).start()
    warm_load(load)
    t_kill = time.monotonic()
    suite.cluster.kill_host(victim)

    def out_everywhere() -> bool:
        docs = suite.cluster.statuses(survivors)
        if len(docs) != len(survivors):
            return False
        for doc in docs.values():
            for r in doc["replicas"]:
                if r["name"] in gone and r["weight"] > 0:
                    return False
        return True

    out, t_out = wait_for(out_everywhere, 30, 0.2)
    res.numbers["dead replicas out of routing everywhere (s)"] = (
        f"{t_out:.1f}" if out else "never (30 s)"
    )
    res.check(
        "dead host's replicas out of routing everywhere within 15 s",
        bool(out) and t_out <= 15,
        f"{t_out:.1f}s",
    )

    cap, _ = wait_for(lambda: suite.serving(survivors, 3), 30 - min(t_out, 29), 0.2)
    t_cap_total = time.monotonic() - t_kill
    res.numbers["capacity restored (s)"] = f"{t_cap_total:.1f}" if cap else "never"
    promoted = {
        n: sorted(
            r["name"] for r in d["replicas"] if r["name"].endswith("-b") and r["role"] == "active"
        )
        for n, d in suite.cluster.statuses(survivors).items()
    }
    res.check(
        "standby promoted, 3 replicas serving again within 15 s",
        bool(cap) and t_cap_total <= 15,
        f"{t_cap_total:.1f}s; active standbys {promoted}",
    )

    def ctl_lost() -> str | None:
        done = suite.cluster.ctl(survivors[0], "status", "--json")
        if done.returncode != 0:
            return None
        doc = json.loads(done.stdout)
        lost = [n for n in doc.get("nodes", []) if n.get("name") == victim.name and n.get("lost")]
        return done.stdout if lost else None

    shown, _ = wait_for(ctl_lost, 20, 0.5)
    res.check(
        f"hanodectl status shows {victim.name} lost",
        bool(shown),
        "" if shown else "not shown in 20 s",
    )
    suite.ledger_write(survivors[1])
    t_dead_end = time.monotonic()

    t_back = time.monotonic()
    suite.cluster.revive_host(victim)

    def rejoined() -> bool:
        docs = suite.cluster.statuses()
        if len(docs) != 3:
            return False
        for doc in docs.values():
            node: dict[str, Any] = next((n for n in doc["nodes"] if n["name"] == victim.name), {})
            if node.get("lost") or not node.get("reachable"):
                return False
            rep = {r["name"]: r for r in doc["replicas"]}[victim.replica("a")]
            if rep["health"] != "healthy":
                return False
        return True

    back, _ = wait_for(rejoined, 40, 0.3)
    t_rejoin = time.monotonic() - t_back
    res.numbers["rejoined after restart (s)"] = f"{t_rejoin:.1f}" if back else "never"
    res.check(
        f"{victim.name} rejoins, not lost, its replicas healthy", bool(back), f"{t_rejoin:.1f}s"
    )

    def serves_again() -> bool:
        return any(r.replica in gone and not r.error for r in load.between(t_back))

    again, _ = wait_for(serves_again, 30, 0.2)
    t_again = time.monotonic() - t_back
    res.numbers["serving again after restart began (s)"] = f"{t_again:.1f}" if again else "never"
    res.check(f"{victim.name}'s replicas serve again", bool(again), f"{t_again:.1f}s")
    load.stop()
    after_out = [
        r
        for r in load.between(t_kill + (t_out if out else 30) + 1, t_dead_end)
        if r.replica in gone
    ]
    res.check(
        "no request served by the dead host's replicas while it was dead",
        not after_out,
        f"{len(after_out)} requests claim it",
    )
    common_checks(suite, res, t0, load, survivors)


def leader_sigstop(suite: Suite, res: FaultResult, *, seconds: float = 5.0) -> None:
    """The leader's daemon frozen (SIGSTOP) for ``seconds``, then SIGCONT."""
    t0 = time.monotonic()
    leader = wait_for(suite.leader, 20)[0]
    if leader is None or leader.daemon is None:
        raise RuntimeError("no leader before the fault")
    others = [n for n in suite.nodes if n is not leader]
    load = Load(others, per_node=2).start()
    warm_load(load)
    os.kill(leader.daemon.pid, signal.SIGSTOP)
    try:
        new, t_new = wait_for(lambda: suite.leader(others, exclude=leader.name), seconds, 0.2)
        res.numbers["new leader while frozen (s)"] = f"{t_new:.1f}" if new else "none"
        hold(max(0.0, seconds - t_new))
    finally:
        os.kill(leader.daemon.pid, signal.SIGCONT)
    suite.ledger_write(others[0])
    ok, _ = wait_for(lambda: suite.serving(), 30, 0.3)
    res.check("serving everywhere after SIGCONT", bool(ok), "")
    load.stop()
    common_checks(suite, res, t0, load, others)


def kill_restart_loop(suite: Suite, res: FaultResult, *, rounds: int = 3) -> None:
    """One node's daemon SIGKILLed and restarted, ``rounds`` times; traffic on the others."""
    t0 = time.monotonic()
    victim = suite.nodes[0]
    others = suite.nodes[1:]
    load = Load(others, per_node=2).start()
    warm_load(load)
    times = []
    for k in range(rounds):
        t_k = time.monotonic()
        suite.cluster.stop_daemon(victim, signal.SIGKILL)
        suite.cluster.restart(victim, victim.env)
        ok, _ = wait_for(lambda: suite.leader() is not None, 30, 0.2)
        times.append(time.monotonic() - t_k)
        suite.ledger_write(others[k % 2])
        if not ok:
            res.check(f"round {k + 1}: leader agreed by all", False, "no leader in 30 s")
    res.numbers["rounds"] = str(rounds)
    res.numbers["kill to leader agreed (s)"] = ", ".join(f"{t:.1f}" for t in times)
    ok, _ = wait_for(lambda: suite.serving(), 30, 0.3)
    res.check("serving everywhere after the loop", bool(ok), "")
    load.stop()
    common_checks(suite, res, t0, load, others)


def full_restart(suite: Suite, res: FaultResult) -> None:
    """Every daemon stopped (SIGTERM) and started again; the simulators keep running."""
    t0 = time.monotonic()
    suite.ledger_write(suite.nodes[1])
    for node in suite.nodes:
        suite.cluster.stop_daemon(node, signal.SIGTERM)
    t_start = time.monotonic()
    for node in suite.nodes:
        suite.cluster.spawn(node, node.env)
    for node in suite.nodes:
        suite.cluster.ready(node)
    ok, took = wait_for(lambda: suite.serving(), 60, 0.3)
    res.numbers["start to serving everywhere (s)"] = f"{time.monotonic() - t_start:.1f}"
    res.check("serving everywhere after the restart", bool(ok), f"{took:.1f}s")
    load = Load(suite.nodes, per_node=1).start()
    warm_load(load, 30)
    load.stop()
    common_checks(suite, res, t0, load, suite.nodes)


def _dumps(node: Node) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in node.data_dir.rglob("raft.dump")}


def compaction_restart(suite: Suite, res: FaultResult) -> None:
    """Each node compacts its Raft log (a full dump replaces the journal), then all are killed
    (SIGKILL) and restarted from the dump plus what followed it."""
    t0 = time.monotonic()
    wall0 = time.time()
    low = os.environ.get("HANODE_TEST_LOG_COMPACTION_MIN_ENTRIES")
    res.numbers["compaction threshold"] = (
        f"{low} entries (HANODE_TEST_LOG_COMPACTION_MIN_ENTRIES)" if low else "default (60 s timer)"
    )
    for k in range(4):
        suite.ledger_write(suite.nodes[k % 3])

    def compacted() -> bool:
        return all(any(m > wall0 for m in _dumps(n).values()) for n in suite.nodes)

    ok, took = wait_for(compacted, 90, 0.5)
    res.numbers["every node compacted after (s)"] = f"{took:.1f}" if ok else "not within 90 s"
    res.check("every node wrote a fresh full dump (log compacted)", bool(ok), f"{took:.1f}s")
    for node in suite.nodes:
        suite.cluster.stop_daemon(node, signal.SIGKILL)
    for node in suite.nodes:
        suite.cluster.spawn(node, node.env)
    for node in suite.nodes:
        suite.cluster.ready(node)
    ok2, took2 = wait_for(lambda: suite.serving(), 60, 0.3)
    res.check("serving everywhere after the restart", bool(ok2), f"{took2:.1f}s")
    load = Load(suite.nodes, per_node=1).start()
    warm_load(load, 30)
    load.stop()
    common_checks(suite, res, t0, load, suite.nodes)
