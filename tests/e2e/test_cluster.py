"""End-to-end: three ``hanode run`` nodes in a Raft cluster, each with its own simulators.

Every node is a separate process with its own data dir; inference goes through each node's
router with the official OpenAI client (``max_retries=0``), operations go through ``hanodectl``
as a separate process. Timings are short ([health] interval 0.2 s, elections 0.3-0.9 s, planner
every 0.3 s) and every wait is bounded.

The plain cluster (``shared``) is started once for the module: its tests leave it as they found
it, and the one that freezes two nodes runs last. Tests that kill or restart nodes start their
own cluster.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hanode.devtools.procs import NodeProcess, node_config_toml, wait_until
from tests.e2e.cluster_support import MODEL, Node, RaftCluster, Replica
from tests.support.procs import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# The shared cluster: breakers trip after 2 OOMs and stay open long enough to be seen; no L2
# completion probes beyond the first (they would count as traffic to a replica).
SHARED_SECTIONS: dict[str, dict[str, Any]] = {
    "health": {"l2_interval_s": 3600.0, "passive_window_s": 5.0},
    "breaker": {
        "consecutive_failures": 2,
        "oom_trip_count": 2,
        "open_base_s": 20.0,
        "open_max_s": 30.0,
    },
}


def three_nodes(r3_role: str = "active") -> list[tuple[str, list[Replica]]]:
    return [
        ("n1", [Replica("r1")]),
        ("n2", [Replica("r2")]),
        ("n3", [Replica("r3", role=r3_role)]),
    ]


@contextlib.contextmanager
def running(
    tmp_path: Path,
    layout: list[tuple[str, list[Replica]]],
    sections: dict[str, dict[str, Any]] | None = None,
    models: list[dict[str, Any]] | None = None,
) -> Iterator[RaftCluster]:
    cluster = RaftCluster(tmp_path, layout, sections, models or [])
    failed = True
    try:
        cluster.start()
        cluster.wait_serving()
        yield cluster
        failed = False
    finally:
        if failed:
            print(cluster.outputs())
        cluster.stop_all()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftCluster]:
    with running(tmp_path_factory.mktemp("shared"), three_nodes(), SHARED_SECTIONS) as cluster:
        yield cluster


@pytest.fixture
def cluster(shared: RaftCluster, request: pytest.FixtureRequest) -> Iterator[RaftCluster]:
    """The shared cluster, in its serving state; node logs are printed when a test fails."""
    shared.wait_serving(timeout=20)
    yield shared
    report = getattr(request.node, "_e2e_rep_call", None)
    if report is not None and report.failed:
        print(shared.outputs())


def served_by(node: Node, n: int) -> Counter[str]:
    client = node.openai()
    return Counter(node.ask(client) for _ in range(n))


def wait_routes(nodes: list[Node], replica: str, timeout: float = 10.0) -> None:
    """Each node's router sends some requests to ``replica`` again (bounded)."""
    for node in nodes:

        def routed(node: Node = node) -> bool:
            return replica in served_by(node, 6)

        wait_until(
            routed,
            timeout,
            interval=0.1,
            message=f"{node.name} routes to {replica}",
        )


def names(items: list[dict[str, Any]]) -> set[str]:
    return {str(item["name"]) for item in items}


def events_of(c: RaftCluster, node: Node | int, *args: str) -> list[dict[str, Any]]:
    out = c.ctl_ok(node, "events", "--json", *args)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# -- 1. one leader -------------------------------------------------------------------------------
def test_one_leader_agreed_by_all_nodes(cluster: RaftCluster) -> None:
    c = cluster
    statuses = c.parallel(c.status, c.nodes)
    leaders = {s["node"]: s["leader"] for s in statuses}
    assert set(leaders) == {"n1", "n2", "n3"}, leaders
    leader = statuses[0]["leader"]
    assert leader in leaders and all(v == leader for v in leaders.values()), leaders
    for doc in statuses:
        assert doc["freshness"]["has_quorum"] is True, doc["freshness"]
        assert sorted(n["name"] for n in doc["nodes"]) == ["n1", "n2", "n3"], doc["nodes"]
        assert all(n["reachable"] for n in doc["nodes"]), doc["nodes"]

    views = c.parallel(c.members, c.nodes)
    raft = {n.raft: n.name for n in c.nodes}
    says_leader = []
    for node, members in zip(c.nodes, views, strict=True):
        assert sorted(m["address"] for m in members) == sorted(raft), members
        me = [m for m in members if m["self"]]
        assert len(me) == 1 and me[0]["address"] == node.raft, members
        if me[0]["leader"]:
            says_leader.append(node.name)
        marked = [m["node"] for m in members if m["leader"]]
        assert marked == [leader], (node.name, members)
        assert all(m["connected"] for m in members), members
        assert {m["address"]: m["node"] for m in members} == raft, members
    assert says_leader == [leader], views


# -- 2. drain through one node, obeyed by every router --------------------------------------------
def test_drain_on_one_node_is_obeyed_by_every_router(cluster: RaftCluster) -> None:
    c = cluster
    n1, n2, n3 = c.nodes
    before = n3.chat_requests("r3")
    try:
        out = c.ctl_ok(n1, "drain", "r3")  # r3 lives on n3; the command goes to n1
        assert "r3" in out, out
        c.wait_replicas(None, {"r3": {"admin": "drained", "weight": 0.0}}, timeout=3)
        for doc in c.parallel(c.status, c.nodes):
            r3 = {r["name"]: r for r in doc["replicas"]}["r3"]
            assert r3["admin"] == "drained" and r3["weight"] == 0.0, (doc["node"], r3)
            assert doc["models"][MODEL]["replicas_serving"] == 2, doc["models"]
        for node in c.nodes:
            served = served_by(node, 20)
            assert set(served) == {"r1", "r2"}, (node.name, served)
        # not even tried: the simulator behind r3 received no completion at all
        assert n3.chat_requests("r3") == before
    finally:
        c.ctl_ok(n2, "undrain", "r3")
    c.wait_replicas(None, {"r3": {"admin": "enabled"}}, timeout=3)
    wait_routes(c.nodes, "r3")


# -- 3. a breaker opened by one router stops every router ------------------------------------------
def test_breaker_opened_by_one_router_stops_the_others_within_a_second(
    cluster: RaftCluster,
) -> None:
    c = cluster
    a, b, ctrl = c.nodes  # a trips the breaker of r2 (on n2); b and ctrl must follow
    sim = c.nodes[1].sims["r2"]
    sim.admin("faults", {"oom": 1.0})
    try:
        client = a.openai()

        def a_open() -> float | None:
            a.ask(client)  # failover keeps the client's request successful
            state = a.ops_replicas()["r2"]["breaker"]["state"]
            return time.monotonic() if state == "open" else None

        opened_at = wait_until(a_open, timeout=10, interval=0.0, message="n1 opens r2's breaker")

        def others_open() -> float | None:
            states = [n.ops_replicas()["r2"]["breaker"]["state"] for n in (b, ctrl)]
            return time.monotonic() if all(s == "open" for s in states) else None

        seen_at = wait_until(others_open, timeout=5, interval=0.02, message="peers open r2")
        assert seen_at - opened_at < 1.0, f"peers followed after {seen_at - opened_at:.2f}s"

        for node in (b, ctrl):
            rows = [r for r in c.breakers(node) if r["replica"] == "r2"]
            assert any(r["state"] == "open" for r in rows), (node.name, rows)
            assert {r["source"] for r in rows} <= {"cluster", "local"}, rows
            cluster_rows = [r for r in rows if r["source"] == "cluster"]
            assert cluster_rows and cluster_rows[0]["node"] == "n1", rows
            assert cluster_rows[0]["failure_class"] == "gpu_oom", rows

        before = c.nodes[1].chat_requests("r2")
        for node in (b, ctrl):
            served = served_by(node, 20)
            assert "r2" not in served, (node.name, served)
        assert c.nodes[1].chat_requests("r2") == before, "b or ctrl still sent to r2"
    finally:
        sim.admin("faults", {"clear": True})
        c.ctl_ok(ctrl, "reset-breaker", "r2")
    c.wait_replicas(None, {"r2": {"health": "healthy", "breaker": {"state": "closed"}}}, timeout=10)
    wait_routes(c.nodes, "r2")


# -- 8. a node added and removed at run time ------------------------------------------------------
def test_node_added_and_removed_at_run_time(cluster: RaftCluster) -> None:
    c = cluster
    n1, n2, n3 = c.nodes
    n4 = c.add_node("n4", [Replica("r4")])
    n4.spawn()
    n4.ready()
    try:
        c.ctl_ok(n1, "members", "add", n4.raft)

        def everyone_has_n4() -> bool:
            views = c.parallel(c.members, [n1, n2, n3, n4])
            return all(n4.raft in {m["address"] for m in v} and len(v) == 4 for v in views)

        wait_until(everyone_has_n4, timeout=15, interval=0.3, message="n4 in every member list")
        c.wait_leader([n1, n2, n3, n4], timeout=15)
        c.wait_replicas([n1, n2, n3, n4], {"r4": {"health": "healthy", "node": "n4"}}, 15)
        doc = c.status(n2)
        assert "n4" in {n["name"] for n in doc["nodes"]}, doc["nodes"]
        members = c.members(n3)
        assert {m["address"]: m["node"] for m in members}[n4.raft] == "n4", members
        wait_routes([n2, n3], "r4", timeout=10)

        # take it out again: drain its replica, then remove it from the membership
        c.ctl_ok(n2, "drain", "--node", "n4")
        c.wait_replicas([n1, n2, n3], {"r4": {"admin": "drained"}}, timeout=5)
        c.ctl_ok(n1, "members", "remove", n4.raft)

        def n4_gone() -> bool:
            views = c.parallel(c.members, [n1, n2, n3])
            return all({m["address"] for m in v} == {n1.raft, n2.raft, n3.raft} for v in views)

        wait_until(n4_gone, timeout=15, interval=0.3, message="n4 gone from every member list")
    finally:
        c.stop_nodes([n4])
        for sim in n4.sims.values():
            sim.stop()
    c.wait_leader(timeout=10)
    for node in (n1, n2, n3):
        assert "r4" not in served_by(node, 10)


# -- 9. a wrong Raft password is refused; a cluster without one refuses to start -----------------
def test_node_with_wrong_secret_never_joins(cluster: RaftCluster) -> None:
    c = cluster
    n1, n2, n3 = c.nodes
    before = c.status(n2)
    bad = c.add_node("n5", [Replica("r5")], secret="not-the-cluster-secret-at-all")
    bad.spawn()
    bad.ready()
    try:
        # the cluster even expects it: the leader would ship it the log if it could talk to it
        c.ctl_ok(n1, "members", "add", bad.raft)
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            doc = bad.ops_status()
            assert doc["leader"] is None, doc["leader"]
            assert doc["nodes"] == [] and doc["replicas"] == [], doc
            assert doc["freshness"]["has_quorum"] is False, doc["freshness"]
            time.sleep(0.25)
        doc = c.status(bad)
        assert not doc["leader"] and doc["nodes"] == [] and doc["replicas"] == [], doc
        for node in (n1, n2, n3):
            doc = c.status(node)
            assert names(doc["nodes"]) == names(before["nodes"]), doc["nodes"]
            assert "n5" not in names(doc["nodes"]), doc["nodes"]
            assert names(doc["replicas"]) == names(before["replicas"]), doc["replicas"]
            assert "r5" not in names(doc["replicas"]), doc["replicas"]
            assert doc["leader"] == before["leader"], doc["leader"]
            members = {m["address"]: m for m in c.members(node)}
            assert members[bad.raft]["connected"] is False, members
            assert members[bad.raft]["node"] == "", members
        assert "r5" not in served_by(n2, 10)
        c.ctl_ok(n2, "members", "remove", bad.raft)
        for node in (n1, n2, n3):

            def removed(node: Node = node) -> bool:
                return bad.raft not in {m["address"] for m in c.members(node)}

            wait_until(
                removed,
                timeout=10,
                interval=0.3,
                message=f"{bad.raft} removed on {node.name}",
            )
    finally:
        c.stop_nodes([bad])
        for sim in bad.sims.values():
            sim.stop()


def test_cluster_without_secret_refuses_to_start_unless_insecure_dev(tmp_path: Path) -> None:
    config = tmp_path / "lone.toml"
    config.write_text(
        node_config_toml(
            name="lone",
            data_dir=tmp_path / "lone-data",
            router_port=free_port(),
            metrics_port=free_port(),
            replicas=[{"name": "r1", "model": MODEL, "url": "http://127.0.0.1:9"}],
            sections={"cluster": {"raft_listen": f"127.0.0.1:{free_port()}"}},
        )
    )
    refused = NodeProcess(config, wait=False, log_path=tmp_path / "refused.log")
    try:
        rc = refused.wait_exit(timeout=30)
        text = refused.output()
    finally:
        refused.stop()
    assert rc != 0, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "secret_file" in lines[0] and "insecure-dev" in lines[0], lines[0]
    assert not (tmp_path / "lone-data" / "raft").exists() or not any(
        (tmp_path / "lone-data" / "raft").iterdir()
    )

    dev = NodeProcess(
        config, extra_args=["--insecure-dev"], log_path=tmp_path / "dev.log", timeout=30
    )
    try:
        warnings = [
            json.loads(ln)
            for ln in dev.output().splitlines()
            if ln.startswith("{") and "raft_insecure" in ln
        ]
        assert warnings and warnings[0]["level"] == "warning", dev.output()
        assert dev.alive
    finally:
        assert dev.stop() == 0


# -- 7. a node cut off from the others keeps routing (runs last on the shared cluster) ------------
def test_isolated_node_keeps_routing_on_its_last_state(cluster: RaftCluster) -> None:
    c = cluster
    leader = c.wait_leader()
    isolated = next(n for n in c.nodes if n.name == leader)  # the hardest case: the leader
    others = [n for n in c.nodes if n is not isolated]
    try:
        for node in others:
            node.signal(signal.SIGSTOP)
        wait_until(
            lambda: not isolated.ops_status()["freshness"]["has_quorum"],
            timeout=5,
            interval=0.1,
            message="isolated node notices it lost the majority",
        )
        doc = c.status(isolated)
        assert doc["freshness"]["has_quorum"] is False, doc["freshness"]
        # writes are refused without a majority (exit 3: the cluster did not answer)
        refused = c.ctl(isolated, "drain", "r1")
        assert refused.returncode == 3, (refused.returncode, refused.stderr)
        served = served_by(isolated, 30)
        assert sum(served.values()) == 30
        assert set(served) == {"r1", "r2", "r3"}, served
        admin = {r["name"]: r["admin"] for r in doc["replicas"]}
        assert all(admin[r] == "enabled" for r in ("r1", "r2", "r3")), admin
    finally:
        for node in others:
            with contextlib.suppress(OSError):
                node.signal(signal.SIGCONT)
    c.wait_leader(timeout=15)
    assert all(c.status(n)["freshness"]["has_quorum"] for n in c.nodes)


# -- 4. the leader dies; traffic through the others never fails -----------------------------------
def test_leader_killed_new_leader_and_no_failed_request(tmp_path: Path) -> None:
    with running(tmp_path, three_nodes()) as c:
        leader_name = c.wait_leader()
        leader = next(n for n in c.nodes if n.name == leader_name)
        survivors = [n for n in c.nodes if n is not leader]
        stop = threading.Event()
        ok: Counter[str] = Counter()
        errors: list[str] = []
        after_kill: Counter[str] = Counter()
        killed = threading.Event()

        def drive(node: Node) -> None:
            client = node.openai(timeout=5.0)
            while not stop.is_set():
                try:
                    replica = node.ask(client)
                    ok[node.name] += 1
                    if killed.is_set():
                        after_kill[replica] += 1
                except Exception as exc:
                    errors.append(f"{node.name}: {exc!r}")

        threads = [threading.Thread(target=drive, args=(n,), daemon=True) for n in survivors]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            t_kill = time.monotonic()
            leader.proc.kill(signal.SIGKILL)  # type: ignore[union-attr]
            killed.set()
            new_leader = c.wait_leader(survivors, timeout=10, exclude=leader_name)
            elapsed = time.monotonic() - t_kill
            time.sleep(1.0)  # keep traffic flowing under the new leader
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        assert new_leader != leader_name and elapsed < 5.0, (new_leader, elapsed)
        assert errors == [], errors[:5]
        assert all(ok[n.name] > 10 for n in survivors), ok
        # the dead node's replica (its simulator is alive) keeps serving through the others
        assert set(after_kill) == {"r1", "r2", "r3"}, after_kill
        for node in survivors:
            doc = c.status(node)
            assert doc["leader"] == new_leader and doc["freshness"]["has_quorum"], doc["freshness"]
            reach = {n["name"]: n["reachable"] for n in doc["nodes"]}
            assert reach[leader_name] is False, reach
        # the new leader takes writes from either survivor
        c.ctl_ok(survivors[1], "drain", "r1")
        c.wait_replicas(survivors, {"r1": {"admin": "drained"}}, timeout=5)


# -- 5. a lost active replica is replaced by a standby ---------------------------------------------
def test_lost_active_replica_promotes_a_standby(tmp_path: Path) -> None:
    models = [{"name": MODEL, "min_active": 2, "redundancy": "n_plus_1"}]
    # demote_hold_s is short: should the planner promote r3 while the cluster forms (before
    # every replica has reported), it hands the role back within a couple of seconds.
    sections = {"cluster": {"demote_hold_s": 1.0}}
    with running(tmp_path, three_nodes(r3_role="standby"), sections, models) as c:
        n1, n2, n3 = c.nodes
        c.wait_replicas(None, {"r3": {"role": "standby"}}, timeout=10)
        doc = c.status(n2)
        roles = {r["name"]: (r["role"], r["weight"] > 0) for r in doc["replicas"]}
        assert roles == {"r1": ("active", True), "r2": ("active", True), "r3": ("standby", False)}
        assert "r3" not in served_by(n2, 15)
        last_seq = max(int(e["seq"]) for e in events_of(c, n1))

        n1.sims["r1"].kill(signal.SIGKILL)
        c.wait_replicas(None, {"r1": {"health": "down"}, "r3": {"role": "active"}}, timeout=15)
        for node in c.nodes:
            reps = {r["name"]: r for r in c.status(node)["replicas"]}
            assert reps["r3"]["role"] == "active", reps["r3"]
            assert reps["r1"]["weight"] == 0.0, reps["r1"]
        events = events_of(c, n3, "--after", str(last_seq))
        role_events = [e for e in events if e["kind"] == "role"]
        assert [e["subject"] for e in role_events] == ["r3"], events
        message = role_events[0]["message"]
        assert message.startswith("promoted"), message
        assert "lost r1" in message and "1/2" in message, message
        assert role_events[0]["fields"].get("by") == "planner", role_events
        wait_routes([n1, n2, n3], "r3")
        for node in c.nodes:
            assert "r1" not in served_by(node, 10)


# -- 6. a whole-cluster restart keeps drains, roles and membership ---------------------------------
def test_cluster_restart_keeps_drains_roles_and_membership(tmp_path: Path) -> None:
    with running(tmp_path, three_nodes(r3_role="standby")) as c:
        n1, n2, n3 = c.nodes
        c.ctl_ok(n1, "promote", "r3")
        c.ctl_ok(n2, "demote", "r1")
        c.ctl_ok(n3, "drain", "r2")
        want = {
            "r1": {"role": "standby", "admin": "enabled"},
            "r2": {"role": "active", "admin": "drained"},
            "r3": {"role": "active", "admin": "enabled"},
        }
        c.wait_replicas(None, want, timeout=5)
        members_before = sorted(m["address"] for m in c.members(n1))
        assert "r1" not in served_by(n1, 10) and "r2" not in served_by(n1, 10)

        c.stop_nodes(c.nodes)  # SIGTERM to all three
        assert all(not n.proc.alive for n in c.nodes)  # type: ignore[union-attr]
        c.start_nodes(c.nodes)
        c.wait_leader(timeout=20)
        c.wait_replicas(None, {**want, "r3": {**want["r3"], "health": "healthy"}}, timeout=15)
        for node in c.nodes:
            doc = c.status(node)
            reps = {r["name"]: r for r in doc["replicas"]}
            got = {n: {k: reps[n][k] for k in ("role", "admin")} for n in want}
            assert got == want, (node.name, got)
            assert sorted(n["name"] for n in doc["nodes"]) == ["n1", "n2", "n3"], doc["nodes"]
            assert sorted(m["address"] for m in c.members(node)) == members_before
        for node in c.nodes:
            served = served_by(node, 10)
            assert set(served) == {"r3"}, (node.name, served)
