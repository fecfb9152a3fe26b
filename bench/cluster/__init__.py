"""The cluster part of ``make bench``: ``hanode run`` nodes (7; 3 with ``--quick``) in one Raft
cluster on loopback.

Measured in this order, each on the same cluster (:mod:`bench.cluster.harness`):

1. consensus write rate, idle and under light traffic, with each node's memory and CPU over
   those windows (:mod:`bench.cluster.writes`, :mod:`bench.cluster.usage`);
2. breaker propagation between routers (:mod:`bench.cluster.breakers`);
3. the consensus write ceiling, clients pushing writes through every node
   (:mod:`bench.cluster.ceiling`);
4. leader failover and the killed node's catch-up (:mod:`bench.cluster.leader`).

:mod:`bench.cluster.report` turns the result into the report's Cluster section; ``python -m
bench.cluster`` runs this part alone and prints it. Everything is stopped by pid when it ends.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench.cluster.breakers import PropagationSample, propagate_once
from bench.cluster.ceiling import CeilingSample, measure_ceiling
from bench.cluster.harness import Cluster, ClusterSettings
from bench.cluster.leader import FailoverSample, failover_once
from bench.cluster.usage import (
    Capacity,
    NodeUsage,
    capacity,
    cpu_of,
    mem_available_bytes,
    rss_bytes,
)
from bench.cluster.writes import JournalTap, WriteWindow, classify, write_window
from bench.harness import BenchError, ProcGroup, log_complaints

__all__ = ["QUICK", "ClusterResult", "ClusterSettings", "run"]
T = TypeVar("T")

# A smoke run (``--quick``): three nodes, short windows, few iterations.
QUICK = ClusterSettings(
    nodes=3,
    settle_s=1.0,
    idle_s=5.0,
    traffic_s=5.0,
    breaker_iterations=3,
    failover_iterations=1,
    ceiling_threads=(8,),
    ceiling_s=3.0,
)


@dataclass(slots=True)
class ClusterResult:
    settings: ClusterSettings
    windows: list[WriteWindow] = field(default_factory=list)
    propagation: list[PropagationSample] = field(default_factory=list)
    failovers: list[FailoverSample] = field(default_factory=list)
    ceilings: list[CeilingSample] = field(default_factory=list)
    usage_idle: list[NodeUsage] = field(default_factory=list)  # over the idle write window
    usage_busy: list[NodeUsage] = field(default_factory=list)  # over the traffic window
    capacity: Capacity | None = None
    notes: list[str] = field(default_factory=list)
    error: str = ""
    elapsed_s: float = 0.0


def _say(msg: str) -> None:
    print(f"bench: cluster: {msg}", flush=True)


def _pids(c: Cluster) -> dict[str, tuple[int, list[int]]]:
    """node -> (its hanode pid, its simulators' pids)."""
    return {
        n.name: (n.proc.pid if n.proc else 0, [c.sims[r].pid for r in n.replicas]) for n in c.nodes
    }


def _usage(c: Cluster, window: Callable[[], T]) -> tuple[T, list[NodeUsage]]:
    """Run ``window``; its result, and each node's CPU share over it and memory at its end."""
    pids = _pids(c)
    cpu0 = {n: (cpu_of(p), sum(cpu_of(s) for s in sims)) for n, (p, sims) in pids.items()}
    t0 = time.monotonic()
    got = window()
    dt = max(1e-6, time.monotonic() - t0)
    out = []
    for n, (p, sims) in pids.items():
        out.append(
            NodeUsage(
                n,
                rss_bytes(p),
                (cpu_of(p) - cpu0[n][0]) / dt,
                sum(rss_bytes(s) for s in sims),
                (sum(cpu_of(s) for s in sims) - cpu0[n][1]) / dt,
            )
        )
    return got, out


def _writes(c: Cluster, result: ClusterResult) -> None:
    s = c.s
    traffic = f"{s.traffic_rps_per_router:g} req/s through each router"
    for label, seconds, rate in (
        ("idle", s.idle_s, 0.0),
        (traffic, s.traffic_s, s.traffic_rps_per_router),
    ):
        w, usage = _usage(c, functools.partial(write_window, c, label, seconds, rate))
        if rate > 0:
            result.usage_busy = usage
        else:
            result.usage_idle = usage
        result.windows.append(w)
        _say(
            f"writes, {label}: {w.commits} commits in {w.duration_s:.1f} s = "
            f"{w.per_s:.2f}/s, {w.per_replica_s:.3f}/s per replica "
            f"({dict(w.ops.most_common())})"
        )
    result.capacity = capacity(
        result.usage_idle, result.usage_busy, mem_available_bytes(), os.cpu_count() or 1
    )
    for u in result.usage_idle:
        _say(
            f"{u.node} at idle: hanode {u.rss_bytes / 2**20:.0f} MiB, {u.cpu_share:.1%} of a core; "
            f"its simulators {u.sims_rss_bytes / 2**20:.0f} MiB, {u.sims_cpu_share:.1%}"
        )


def _breakers(c: Cluster, result: ClusterResult) -> None:
    """The propagation runs, counted as a write window of their own."""
    leader = c.node(c.wait_leader(c.nodes, 10.0))
    with JournalTap(leader.journal, c.tmp / "journal-copy") as tap:
        ci0, t0 = leader.commit_index(), time.monotonic()
        for i in range(c.s.breaker_iterations):
            p = propagate_once(c, i)
            result.propagation.append(p)
            polled = ", ".join(f"{k} {v:.1f}" for k, v in p.polled_ms.items())
            events = ", ".join(f"{k} {v:.1f}" for k, v in p.event_ms.items())
            _say(
                f"breaker {i + 1}: {p.replica} opened by {p.origin}"
                f"{' (leader)' if p.origin_is_leader else ''} after {p.requests} "
                f"requests; seen open (ms): polled {polled or 'n/a'}; events {events or 'n/a'}"
            )
        ci1, t1 = leader.commit_index(), time.monotonic()
    if result.propagation:
        trips = len(result.propagation)
        w = WriteWindow(
            f"during the breaker runs ({trips} trips and resets)",
            t1 - t0,
            ci1 - ci0,
            len(c.replicas),
        )
        w.requests = sum(p.requests for p in result.propagation)
        classify(w, tap.sorted(), ci0, ci1)
        result.windows.append(w)


def _ceilings(c: Cluster, result: ClusterResult) -> None:
    for threads in c.s.ceiling_threads:
        x = measure_ceiling(c, threads, c.s.ceiling_s)
        result.ceilings.append(x)
        errors = f", errors {dict(x.errors)}" if x.errors else ""
        _say(
            f"write ceiling, {threads} clients: {x.commits} commits in {x.duration_s:.1f} s = "
            f"{x.per_s:.0f}/s; call p50 {x.p50_ms:.1f} ms, p99 {x.p99_ms:.1f} ms{errors}"
        )


def _failovers(c: Cluster, result: ClusterResult) -> None:
    for i in range(c.s.failover_iterations):
        f = failover_once(c)
        result.failovers.append(f)
        planner = f"{f.planner_s:.2f} s" if f.planner_s is not None else "n/a"
        _say(
            f"failover {i + 1}: killed {f.killed}, first survivor moved on after "
            f"{f.first_change_s:.3f} s, {f.new_leader} agreed after {f.agreed_s:.3f} s "
            f"(planner {planner}); restarted node listening after {f.listening_s:.2f} s, "
            f"caught up after {f.caught_up_s:.2f} s"
        )


def run(settings: ClusterSettings | None = None) -> ClusterResult:
    """The whole cluster measurement; failures end up in ``result.error``, never raised."""
    s = settings or ClusterSettings()
    result = ClusterResult(s)
    t_begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hanode-bench-cluster-") as name:
        tmp = Path(name)
        with ProcGroup(tmp) as g:
            try:
                c = Cluster(s, g, tmp)
                c.start()
                leader = c.wait_leader(c.nodes, 10.0)
                _say(
                    f"{len(c.nodes)} nodes, {len(c.replicas)} replicas serving; leader {leader} "
                    f"(pids {[n.proc.pid for n in c.nodes if n.proc]})"
                )
                time.sleep(s.settle_s)
                _writes(c, result)
                _breakers(c, result)
                _ceilings(c, result)
                _failovers(c, result)
            except (BenchError, TimeoutError, OSError, RuntimeError) as exc:
                result.error = str(exc)[:2000]
                _say(f"failed: {result.error}")
                result.notes += [e for e in g.exited() if e.startswith("n")]
            except Exception as exc:  # a bug in the measurement must not lose the main results
                result.error = f"{type(exc).__name__}: {exc}"
                _say(f"failed: {result.error}")
            finally:
                nodes = [p for name, p in g.procs if name.startswith("n")]
                g.stop_all()  # before reading: what a node logs on its way out counts too
                logged: Counter[str] = Counter()
                for proc in nodes:
                    logged += log_complaints(proc.output())
        if logged:
            listed = ", ".join(f"{k} x{v}" for k, v in sorted(logged.items()))
            result.notes.append(f"hanode nodes logged: {listed}.")
    result.elapsed_s = time.monotonic() - t_begin
    return result
