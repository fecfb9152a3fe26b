"""Chaos faults of the network: addresses, partitions, packet loss, a skewed clock.

Each takes the running ``Suite`` and fills a ``FaultResult``: a check that cannot be made fails
with the reason, never passes by being skipped."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence

from hanode.devtools.procs import http_request
from tests.chaos.harness import (
    MODEL,
    SECTIONS,
    SIM_PORTS,
    Node,
    NsProcess,
    faketime_env,
    wait_for,
    write_config,
)
from tests.chaos.observe import (
    Load,
)
from tests.chaos.suite import (
    FaultResult,
    Suite,
    common_checks,
    hold,
    rate,
    warm_load,
)


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
