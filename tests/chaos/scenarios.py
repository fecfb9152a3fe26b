"""The faults of the chaos suite and the checks after each; every wait has a deadline.

Each scenario takes the running ``Suite`` and returns a ``FaultResult``: the checks (name,
passed, detail) and the numbers measured. A check that cannot be made (a field the product does
not publish yet) fails with the reason: a check is never skipped into a pass.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hanode.devtools.netns import namespace_pids
from hanode.devtools.procs import http_request
from tests.chaos.harness import (
    MODEL,
    SECTIONS,
    SIM_PORTS,
    SLOW_S,
    ChaosCluster,
    Ledger,
    Load,
    Monitor,
    Node,
    NsProcess,
    Req,
    faketime_env,
    wait_for,
    write_config,
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


# -- the scenarios --------------------------------------------------------------------------------
def advertise_refused(suite: Suite, res: FaultResult) -> None:
    """The same config without advertise_host is refused at start (one line, file and key)."""
    node = suite.nodes[0]
    bad = suite.tmp / "n1-no-advertise.toml"
    path = write_config(node, [p.raft for p in suite.nodes if p is not node], advertise=False)
    bad.write_text(path.read_text())
    write_config(node, [p.raft for p in suite.nodes if p is not node])  # restore the real one
    argv = [sys.executable, "-m", "hanode", "run", "--config", str(bad)]
    proc = NsProcess(
        suite.cluster.bed, node.i, argv, kind="refused", log_path=suite.tmp / "refused.log"
    )
    suite.cluster.strays.append(proc)
    try:
        rc = proc.wait_exit(timeout=30)
    except TimeoutError:
        rc = None
    text = proc.output()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    # one header line, then one line per mistake, each naming the file, the key and the fix
    problems = [ln for ln in lines if ln.startswith(str(bad))]
    res.check(
        "config without advertise_host refused at start, one line per key naming file and key",
        rc not in (None, 0)
        and bool(problems)
        and len(lines) <= len(problems) + 1
        and all("advertise_host" in ln and "]" in ln for ln in problems)
        and '"listening"' not in text,
        f"rc={rc}; {len(problems)} problem lines; output: {text.strip()[:400]}",
    )


def every_router_every_replica(suite: Suite, res: FaultResult) -> None:
    """Loopback replica URLs + advertise_host: every router serves every active replica."""
    t0 = time.monotonic()
    load = Load(suite.nodes, per_node=1).start()
    want = {n.replica("a") for n in suite.nodes}

    def seen_all() -> bool:
        recs = load.between()
        return all(
            {r.replica for r in recs if r.node == n.name and not r.error} >= want
            for n in suite.nodes
        )

    ok, took = wait_for(seen_all, 30, 0.2)
    load.stop()
    seen = {
        n.name: sorted({r.replica for r in load.between() if r.node == n.name and r.replica})
        for n in suite.nodes
    }
    res.numbers["time until every pair seen (s)"] = f"{took:.1f}"
    res.check("every router served every active replica", bool(ok), json.dumps(seen))
    urls = {
        n: {r["name"]: r["url"] for r in d["replicas"]} for n, d in suite.cluster.statuses().items()
    }
    res.check(
        "replicated URLs: own replicas on loopback, the others on their host's address",
        all(
            u.startswith("http://127.0.0.1:") == (rep.split("-")[0] == n)
            for n, reps in urls.items()
            for rep, u in reps.items()
        ),
        json.dumps(urls.get("n1", {})),
    )
    common_checks(suite, res, t0, load, suite.nodes)


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


def partition(suite: Suite, res: FaultResult, *, isolate_leader: bool, seconds: float) -> None:
    """One node cut off from the two others (both directions) for ``seconds``, then healed."""
    t0 = time.monotonic()
    leader = wait_for(suite.leader, 20)[0]
    if leader is None:
        raise RuntimeError("no leader before the fault")
    cut = leader if isolate_leader else next(n for n in suite.nodes if n is not leader)
    majority = [n for n in suite.nodes if n is not cut]
    load = Load(majority, per_node=2).start()
    warm_load(load)
    hold(10.0 if isolate_leader else 3.0)  # the rate before, over a measured window
    t_cut = time.monotonic()
    suite.cluster.bed.partition(cut.i, [n.addr for n in majority])
    new, t_new = wait_for(
        lambda: suite.leader(majority, exclude=cut.name if isolate_leader else ""), 20, 0.2
    )
    res.numbers["leader among the majority (s)"] = f"{t_new:.1f}" if new else "none"
    res.check(
        "the majority has a leader",
        new is not None,
        f"{getattr(new, 'name', None)} after {t_new:.1f}s",
    )
    suite.ledger_write(majority[0])
    refused = suite.cluster.ctl(cut, "drain", cut.replica("a"))
    if refused.returncode == 0:  # acknowledged: it must hold; undo it through the majority
        suite.ledger.admin[cut.replica("a")] = {"drained"}
    else:  # unknown outcome until settled below
        suite.ledger.admin.setdefault(cut.replica("a"), {"enabled"}).add("drained")
    res.check(
        "a write on the cut-off node is refused",
        refused.returncode != 0,
        f"rc={refused.returncode} {refused.stderr.strip()[:120]}",
    )
    hold(max(0.0, seconds - (time.monotonic() - t_cut)))
    t_heal = time.monotonic()
    suite.cluster.bed.heal(cut.i)
    wait_for(lambda: suite.leader() is not None, 20, 0.2)
    suite.ledger.drain(majority[0], cut.replica("a"), on=False)  # settles the refused write
    if isolate_leader:
        before = rate(load.between(), t_cut - 10.0, t_cut)
        during = rate(load.between(), t_cut, t_heal)
        res.numbers["majority rate before (req/s)"] = f"{before:.1f}"
        res.numbers["majority rate while cut (req/s)"] = f"{during:.1f}"
        res.check(
            "the majority's routers keep at least half their rate",
            before > 0 and during >= 0.5 * before,
            f"{during:.1f} vs {before:.1f} req/s",
        )
    ok, _ = wait_for(lambda: suite.serving(), 30, 0.3)
    res.check("serving everywhere after healing", bool(ok), "")
    load.stop()
    common_checks(suite, res, t0, load, majority)


def loss(suite: Suite, res: FaultResult, *, seconds: float, percent: int = 10) -> None:
    """``percent`` % of packets dropped in every namespace (both ways) for ``seconds``."""
    t0 = time.monotonic()
    load = Load(suite.nodes, per_node=1).start()
    warm_load(load)
    t_a = time.monotonic()
    for node in suite.nodes:
        suite.cluster.bed.loss(node.i, percent)
    suite.ledger_write(suite.nodes[0])
    hold(max(0.0, seconds - (time.monotonic() - t_a)))
    for node in suite.nodes:
        suite.cluster.bed.heal(node.i)
    res.numbers["loss"] = f"{percent}% for {seconds:.0f}s"
    ok, _ = wait_for(lambda: suite.serving(), 30, 0.3)
    res.check("serving everywhere after healing", bool(ok), "")
    load.stop()
    common_checks(suite, res, t0, load, suite.nodes)


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


def _breaker(node: Node, replica: str) -> str:
    reps = {r["name"]: r for r in node.status()["replicas"]}
    return str(reps[replica]["breaker"]["state"])


def _trip(suite: Suite, via: Node, owner: Node, timeout: float = 20.0) -> tuple[bool, float]:
    """OOM on ``owner``'s active replica until ``via``'s router opens its breaker."""
    replica = owner.replica("a")
    url = f"http://{owner.addr}:{SIM_PORTS['a']}/admin/faults"
    http_request("POST", url, {"oom": 1.0}, timeout=3)
    client = via.client(timeout=10)

    def opened() -> bool:
        with contextlib.suppress(Exception):
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=2
            )
        return _breaker(via, replica) == "open"

    ok, took = wait_for(opened, timeout, 0.0)
    return bool(ok), took


def _clear(owner: Node) -> None:
    url = f"http://{owner.addr}:{SIM_PORTS['a']}/admin/faults"
    http_request("POST", url, {"clear": True}, timeout=3)


def _propagation(
    suite: Suite, res: FaultResult, label: str, via: Node, owner: Node, peers: Sequence[Node]
) -> None:
    replica = owner.replica("a")
    try:
        opened, t_open = _trip(suite, via, owner)
        res.check(
            f"{label}: {via.name}'s router opens {replica}'s breaker", opened, f"{t_open:.1f}s"
        )
        seen, t_seen = wait_for(
            lambda: all(_breaker(p, replica) == "open" for p in peers), 3.0, 0.05
        )
        res.numbers[f"{label}: peers open after (s)"] = f"{t_seen:.2f}" if seen else "never (3 s)"
        res.check(
            f"{label}: {'/'.join(p.name for p in peers)} open it within 3 s",
            bool(seen),
            f"{t_seen:.2f}s",
        )
        if seen:  # still open a second later (a fresh breaker must not vanish)
            t_hold = time.monotonic()
            states: list[str] = []
            while time.monotonic() - t_hold < 1.5:
                states += [_breaker(p, replica) for p in peers]
                time.sleep(0.1)
            res.check(
                f"{label}: still open on the peers 1.5 s later",
                all(s == "open" for s in states),
                str(Counter(states)),
            )
    finally:
        _clear(owner)
    open_max = float(SECTIONS["breaker"]["open_max_s"])
    closed, t_closed = wait_for(
        lambda: all(_breaker(p, replica) != "open" for p in peers), open_max + 20, 0.2
    )
    res.numbers[f"{label}: open on the peers until (s after clear)"] = f"{t_closed:.1f}"
    res.check(
        f"{label}: the peers' forced open ends within open_max_s + 5 s",
        bool(closed) and t_closed <= open_max + 5,
        f"{t_closed:.1f}s (open_max_s {open_max:.0f})",
    )
    with contextlib.suppress(Exception):
        suite.cluster.ctl(peers[0], "reset-breaker", replica)


def clock_skew(suite: Suite, res: FaultResult, *, offset: str = "+120s") -> None:
    """One node (n3) restarted with its wall clock ``offset`` (libfaketime); breakers and leases
    must behave as with synced clocks."""
    t0 = time.monotonic()
    skewed = suite.nodes[2]
    n1, n2 = suite.nodes[0], suite.nodes[1]
    env = faketime_env(offset)
    probe = subprocess.run(
        suite.cluster.bed.exec_argv(
            skewed.i, [sys.executable, "-c", "import time;print(time.time())"]
        ),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    try:
        delta = float(probe.stdout.strip()) - time.time()
    except ValueError:
        delta = float("nan")
    res.numbers["skew seen by a process with the same preload (s)"] = f"{delta:+.1f}"
    res.check(
        "libfaketime moves time.time() in the node's environment",
        abs(delta - 120) < 5,
        f"{delta:+.1f}s",
    )
    suite.cluster.stop_daemon(skewed)
    suite.cluster.restart(skewed, env)
    t_up = time.monotonic()
    ok, took = wait_for(lambda: suite.serving(), 40, 0.3)
    res.check("serving everywhere with the skewed node", bool(ok), f"{took:.1f}s")
    try:
        _propagation(suite, res, "synced -> skewed", n1, n2, [n2, skewed])
        _propagation(suite, res, "skewed -> synced", skewed, n1, [n1, n2])
        moved = suite.cluster.ctl(n1, "leader", "transfer", "--to", skewed.raft)
        lead, t_lead = wait_for(
            lambda: (ld := suite.leader()) is not None and ld.name == skewed.name, 15, 0.3
        )
        res.check(
            "leadership moves to the skewed node",
            bool(lead),
            f"rc={moved.returncode} {t_lead:.1f}s",
        )
        if lead:
            _propagation(suite, res, "skewed leader", n1, n2, [n2, skewed])
        lost_events = [
            e
            for e in suite.monitor.all_events()
            if e.get("kind") == "membership" and str(e.get("message", "")).startswith("node lost")
        ]
        skew_span = time.monotonic() - t_up
        lost_samples = [s for s in suite.monitor.since(t_up + 10) if skewed.name in s.lost]
        res.check(
            "the skewed node is never marked lost (leases on the leader's monotonic clock)",
            not lost_samples,
            f"{len(lost_samples)} /status samples over {skew_span:.0f}s show it lost; "
            f"{len(lost_events)} 'node lost' events in the run",
        )
    finally:
        suite.cluster.stop_daemon(skewed)
        suite.cluster.restart(skewed, {})
        wait_for(lambda: suite.serving(), 40, 0.3)
    common_checks(suite, res, t0, None, [])


# -- runs -----------------------------------------------------------------------------------------
Scenario = tuple[str, str, Callable[[Suite, FaultResult], None]]

SHORT: list[Scenario] = [
    ("refused without advertise_host", "same config, no [node] advertise_host", advertise_refused),
    ("every router, every replica", "loopback URLs + advertise_host", every_router_every_replica),
    (
        "host death",
        "a follower's link down, its processes SIGKILLed, under load; then back",
        host_death,
    ),
    ("leader SIGSTOP 5 s", "the leader's daemon frozen for 5 s", leader_sigstop),
    (
        "minority partition 10 s",
        "one follower cut off (nft drop both ways) for 10 s",
        lambda s, r: partition(s, r, isolate_leader=False, seconds=10.0),
    ),
]

FULL: list[Scenario] = [
    *SHORT[:3],
    (
        "leader isolated 20 s",
        "the leader cut off from the majority (nft drop) for 20 s",
        lambda s, r: partition(s, r, isolate_leader=True, seconds=20.0),
    ),
    SHORT[4],
    (
        "10% packet loss 20 s",
        "numgen random mod 100 < 10 drop, every namespace, both ways",
        lambda s, r: loss(s, r, seconds=20.0),
    ),
    SHORT[3],
    ("SIGKILL/restart loop", "n1's daemon SIGKILLed and restarted 3 times", kill_restart_loop),
    ("full cluster stop and start", "SIGTERM to every daemon, then start all", full_restart),
    (
        "restart after log compaction",
        "every log compacted, every daemon SIGKILLed, restarted",
        compaction_restart,
    ),
    ("clock 2 minutes ahead", "n3 under libfaketime +120 s (wall clock only)", clock_skew),
]


def run(
    scenarios: Sequence[Scenario], tmp: Path, log: Callable[[str], None] = print
) -> tuple[list[FaultResult], list[str], float]:
    """Start the bed, run the scenarios in order, tear everything down; (results, leaks, s)."""
    start = time.monotonic()
    suite = Suite(tmp)
    results: list[FaultResult] = []
    leaks: list[str] = []
    try:
        suite.start()
        log(f"test bed up: {suite.cluster.bed.tag} {suite.cluster.bed.subnet}")
        for name, what, fn in scenarios:
            res = run_scenario(name, what, fn, suite)
            results.append(res)
            log(f"{'PASS' if res.passed else 'FAIL'} {name} ({res.seconds:.0f}s) {res.error}")
            for c in res.checks:
                if not c.passed:
                    log(f"    failed: {c.name}: {c.detail[:300]}")
    finally:
        leaks = suite.close()
    return results, leaks, time.monotonic() - start
