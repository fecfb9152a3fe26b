"""The chaos suite's bookkeeping: fault results, the running suite, and the checks made after
every fault (one leader per term, acknowledged writes kept, one state digest, no halt, client
errors and latency, critical lines, leaks); every wait has a deadline."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hanode.devtools.netns import namespace_pids
from tests.chaos.harness import (
    MODEL,
    SLOW_S,
    ChaosCluster,
    Node,
    wait_for,
)
from tests.chaos.observe import (
    Ledger,
    Load,
    Monitor,
    Req,
)

CONVERGE_S = 30.0


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class FaultResult:
    name: str
    what: str
    checks: list[Check] = field(default_factory=list)
    numbers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and all(c.passed for c in self.checks)

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(passed), detail))
        return bool(passed)


class Suite:
    """The running cluster plus its monitor and ledger, shared by the scenarios in order."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.cluster = ChaosCluster(tmp)
        self.monitor = Monitor(self.cluster)
        self.ledger = Ledger(self.cluster)
        self.flip = 0
        self.seen_critical: set[str] = set()

    @property
    def nodes(self) -> list[Node]:
        return self.cluster.nodes

    def start(self) -> None:
        self.cluster.up()
        self.monitor.start()
        ok, took = wait_for(self.serving, 60)
        if not ok:
            raise RuntimeError(f"cluster not serving within {took:.0f}s: {self._brief()}")

    def close(self) -> list[str]:
        self.monitor.stop()
        return self.cluster.close()

    def _brief(self) -> str:
        out = {}
        for name, doc in self.cluster.statuses().items():
            out[name] = {
                "leader": doc.get("leader"),
                "replicas": {
                    r["name"]: (r["role"], r["health"], r["weight"]) for r in doc["replicas"]
                },
            }
        return json.dumps(out)

    # -- common predicates -------------------------------------------------------------------
    def leader(self, nodes: Sequence[Node] | None = None, exclude: str = "") -> Node | None:
        """The leader every one of ``nodes`` names (None while they disagree)."""
        nodes = list(nodes) if nodes is not None else self.nodes
        docs = self.cluster.statuses(nodes)
        names = {docs[n.name].get("leader") for n in nodes if n.name in docs}
        if len(docs) != len(nodes) or len(names) != 1:
            return None
        name = names.pop()
        if not name or name == exclude:
            return None
        return self.cluster.node(str(name))

    def serving(self, nodes: Sequence[Node] | None = None, want: int = 3) -> bool:
        nodes = list(nodes) if nodes is not None else self.nodes
        docs = self.cluster.statuses(nodes)
        if len(docs) != len(nodes) or self.leader(nodes) is None:
            return False
        return all(
            d["models"].get(MODEL, {}).get("replicas_serving", 0) >= want for d in docs.values()
        )

    def ledger_write(self, via: Node) -> bool:
        """The next acknowledged-or-not write of a cycle on n3-b through ``via``: drain,
        promote, undrain, demote. n3-b sorts last among the standbys, so the planner never needs
        it while n1-b can be promoted, and it never demotes what an operator promoted."""
        self.flip += 1
        target = self.nodes[-1].replica("b")
        step = self.flip % 4
        if step in (1, 3):
            return self.ledger.drain(via, target, on=step == 1)
        return self.ledger.role_of(via, target, "active" if step == 2 else "standby")


# -- checks shared by every fault -----------------------------------------------------------------
def leaders_per_term(suite: Suite, t0: float) -> tuple[bool, str]:
    """At most one leader per term: in the replicated "leader" events, and in what nodes say."""
    by_term_events: dict[int, set[str]] = {}
    no_term = 0
    for event in suite.monitor.all_events():
        if event.get("kind") != "leader":
            continue
        term = (event.get("fields") or {}).get("term")
        if term is None:
            no_term += 1
            continue
        by_term_events.setdefault(int(term), set()).add(str(event.get("subject")))
    by_term_status: dict[int, set[str]] = {}
    unknown = 0
    for s in suite.monitor.since(t0):
        if s.leader == s.node:  # a node that says it leads
            if s.term is None:
                unknown += 1
                continue
            by_term_status.setdefault(int(s.term), set()).add(s.node)
    bad_e = {t: sorted(v) for t, v in by_term_events.items() if len(v) > 1}
    bad_s = {t: sorted(v) for t, v in by_term_status.items() if len(v) > 1}
    detail = (
        f"terms in leader events: {sorted(by_term_events)}; self-claims by term in /status: "
        f"{ {t: sorted(v) for t, v in sorted(by_term_status.items())} }"
    )
    if no_term and not by_term_events:
        return False, f"leader events carry no fields.term ({no_term} events): cannot check"
    if unknown and not by_term_status:
        return False, "/status has no consensus.term: cannot check"
    if bad_e or bad_s:
        return False, f"two leaders in one term: events {bad_e}, status {bad_s}; {detail}"
    return True, detail


def converge(suite: Suite) -> tuple[bool, float, str]:
    last: dict[str, Any] = {}

    def same() -> bool:
        docs = suite.cluster.statuses()
        digests = {n: (d.get("consensus") or {}).get("state_digest") for n, d in docs.items()}
        last.clear()
        last.update(digests)
        values = set(digests.values())
        return len(docs) == len(suite.nodes) and len(values) == 1 and None not in values

    ok, took = wait_for(same, CONVERGE_S)
    return bool(ok), took, json.dumps(last)


def common_checks(
    suite: Suite,
    res: FaultResult,
    t0: float,
    load: Load | None,
    routers: Sequence[Node],
    window: tuple[float, float] | None = None,
) -> None:
    ok, detail = leaders_per_term(suite, t0)
    res.check("at most one leader per term", ok, detail)

    ledger_ok, took = wait_for(
        lambda: (
            (docs := suite.cluster.statuses())
            and len(docs) == len(suite.nodes)
            and not suite.ledger.mismatches(docs)
        ),
        CONVERGE_S,
    )
    mism = suite.ledger.mismatches(suite.cluster.statuses())
    res.check(
        "no acknowledged drain or role change lost",
        bool(ledger_ok),
        f"{suite.ledger.acked} acknowledged, {suite.ledger.unsure} unknown outcome; "
        + (f"mismatches {mism[:4]}" if mism else f"all nodes agree after {took:.1f}s"),
    )
    members = {
        n: sorted(x["name"] for x in d.get("nodes", []))
        for n, d in suite.cluster.statuses().items()
    }
    want = sorted(n.name for n in suite.nodes)
    res.check(
        "membership unchanged on every node",
        len(members) == len(suite.nodes) and all(v == want for v in members.values()),
        json.dumps(members),
    )
    conv, took, digests = converge(suite)
    res.numbers["digest convergence (s)"] = f"{took:.1f}"
    res.check("every node converges to one state digest", conv, f"after {took:.1f}s: {digests}")
    halted = {
        n: (d.get("consensus") or {}).get("halted") for n, d in suite.cluster.statuses().items()
    }
    res.check("no node halted", all(v is None for v in halted.values()), json.dumps(halted))
    if load is not None:
        names = {n.name for n in routers}
        t_a, t_b = window if window is not None else (0.0, float("inf"))
        recs = [r for r in load.between(t_a, t_b) if r.node in names]
        errors = [r for r in recs if r.error]
        slow = [r for r in recs if r.dt > SLOW_S]
        worst = max((r.dt for r in recs), default=0.0)
        res.numbers["requests"] = str(len(recs))
        res.numbers["errors"] = str(len(errors))
        res.numbers["slowest request (s)"] = f"{worst:.2f}"
        examples = Counter(r.error for r in errors).most_common(3)
        res.check(
            f"0 errors, non-streamed, through {'/'.join(sorted(names))}",
            len(recs) > 0 and not errors,
            f"{len(errors)} of {len(recs)} failed: {examples}" if errors else f"{len(recs)} ok",
        )
        res.check(
            f"no request slower than {SLOW_S:.0f}s",
            len(recs) > 0 and not slow,
            f"{len(slow)} slower; slowest {worst:.2f}s",
        )
    critical = critical_lines(suite)
    resyncs = resync_lines(suite)
    res.numbers["resyncs after a diverged state"] = str(len(resyncs))
    # pysyncobj logs a critical line when it truncates entries it had already applied (its
    # state may have diverged); hanode's checkpoints must then find and heal it: the nodes
    # converge to one digest, every diverged one having taken the cluster's state again.
    res.check(
        "a possibly diverged state (pysyncobj critical line) is healed: one digest everywhere",
        not critical or conv,
        ("; ".join(critical[:2]) + f"; resyncs: {'; '.join(resyncs[:2]) or 'none'}")
        if critical
        else "no critical line",
    )
    leaks = leak_report(suite)
    res.check("no leaked process or nft table", not leaks, "; ".join(leaks) or "none")


def critical_lines(suite: Suite) -> list[str]:
    out = []
    for node in suite.nodes:
        if node.daemon is None:
            continue
        for line in node.daemon.output().splitlines():
            if '"level":"critical"' in line and line not in suite.seen_critical:
                suite.seen_critical.add(line)  # each is reported once, by the fault it followed
                out.append(f"{node.name}: {line[:240]}")
    return out


def resync_lines(suite: Suite) -> list[str]:
    out = []
    for node in suite.nodes:
        if node.daemon is None:
            continue
        for line in node.daemon.output().splitlines():
            if '"event":"state_diverged"' in line and line not in suite.seen_critical:
                suite.seen_critical.add(line)
                out.append(f"{node.name}: {line[:240]}")
    return out


def leak_report(suite: Suite) -> list[str]:
    out: list[str] = []
    bed = suite.cluster.bed
    for node in suite.nodes:
        tables = bed.tables(node.i)
        if tables:
            out.append(f"{node.name}: nft tables {tables}")
        ours = set(node.pids())
        extra = [p for p in namespace_pids(bed.ns(node.i)) if p not in ours]
        if extra:
            out.append(f"{node.name}: processes not ours {extra}")
        dead = [
            k for k, p in [("daemon", node.daemon), *node.sims.items()] if p is None or not p.alive
        ]
        if dead:
            out.append(f"{node.name}: {dead} not running")
    return out


def rate(recs: Sequence[Req], t0: float, t1: float) -> float:
    ok = [r for r in recs if t0 <= r.t0 + r.dt < t1 and not r.error]
    return len(ok) / max(t1 - t0, 1e-9)


def hold(seconds: float) -> None:
    """The fault's own duration (a measured window, not a wait for the product)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))


def warm_load(load: Load, n: int = 20, timeout: float = 20.0) -> bool:
    ok, _ = wait_for(lambda: len(load.between()) >= n, timeout, 0.1)
    return bool(ok)


def run_scenario(
    name: str, what: str, fn: Callable[[Suite, FaultResult], None], suite: Suite
) -> FaultResult:
    res = FaultResult(name, what)
    start = time.monotonic()
    try:
        fn(suite, res)
    except Exception as exc:
        res.error = f"{type(exc).__name__}: {exc}"[:600]
    finally:
        for node in suite.nodes:  # whatever happened: no fault left behind
            with contextlib.suppress(Exception):
                suite.cluster.bed.heal(node.i)
                suite.cluster.bed.link(node.i, up=True)
            if node.daemon is not None and node.daemon.alive:
                with contextlib.suppress(OSError):
                    os.kill(node.daemon.pid, signal.SIGCONT)
    res.seconds = time.monotonic() - start
    return res
