"""End-to-end on loopback: node leases and versions across real ``hanode run`` processes.

A node whose daemon and replicas die together is declared lost by the leader after
``node_lease_s``; its replicas leave every router and a standby elsewhere is promoted; when it
comes back it rejoins. A member on an older protocol holds the cluster version down until it
leaves, and a node that meets a command it cannot apply halts and says so.
(The same faults across network namespaces, with dropped packets instead of refused
connections, are in tests/chaos.)
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from hanode.cluster.document import PROTOCOL
from hanode.devtools.procs import wait_until
from tests.e2e.cluster_support import MESSAGES, MODEL, Node, RaftCluster, Replica

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

LEASE_S = 2.0
SECTIONS: dict[str, dict[str, Any]] = {
    # demote_hold_s is short: a standby promoted while the cluster forms is handed back soon.
    "cluster": {"node_lease_s": LEASE_S, "demote_hold_s": 1.0},
    "health": {"l2_interval_s": 3600.0},
}


def consensus(node: Node) -> dict[str, Any]:
    doc: dict[str, Any] = node.ops_status()["consensus"]
    return doc


class Traffic:
    """Clients sending non-streamed requests through some routers until stopped (bounded)."""

    def __init__(self, nodes: list[Node], limit_s: float = 60.0) -> None:
        self.stop = threading.Event()
        self.ok = 0
        self.errors: list[str] = []
        self.slowest = 0.0
        self._limit = time.monotonic() + limit_s
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in nodes]

    def _run(self, node: Node) -> None:
        client = OpenAI(base_url=node.router_url + "/v1", api_key="x", max_retries=0, timeout=10)
        while not self.stop.is_set() and time.monotonic() < self._limit:
            t0 = time.monotonic()
            try:
                out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)
                assert out.choices[0].message.content
                self.ok += 1
            except Exception as exc:
                self.errors.append(f"{node.name}: {exc!r}")
            self.slowest = max(self.slowest, time.monotonic() - t0)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(20)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RaftCluster]:
    layout = [
        ("n1", [Replica("r1")]),
        ("n2", [Replica("r2", role="standby")]),
        ("n3", [Replica("r3")]),
    ]
    models = [{"name": MODEL, "min_active": 2, "redundancy": "n_plus_1"}]
    c = RaftCluster(tmp_path, layout, SECTIONS, models)
    failed = True
    try:
        yield c
        failed = False
    finally:
        if failed:
            print(c.outputs())
        c.stop_all()


def test_a_dead_node_is_lost_its_capacity_restored_and_it_rejoins(cluster: RaftCluster) -> None:
    c = cluster.start()
    c.wait_serving()
    n1, n2, n3 = c.nodes
    c.wait_replicas(None, {"r2": {"role": "standby"}, "r1": {"health": "healthy"}}, timeout=15)
    with Traffic([n2, n3]) as traffic:
        wait_until(lambda: traffic.ok >= 10, 20, message="traffic flows")
        died = time.monotonic()
        n1.proc.kill(signal.SIGKILL)  # type: ignore[union-attr]
        n1.sims["r1"].kill(signal.SIGKILL)

        def lost_everywhere() -> bool:
            return all(consensus(n)["lost_nodes"] == ["n1"] for n in (n2, n3))

        wait_until(lost_everywhere, 15, interval=0.1, message="n1 lost on n2 and n3")
        c.wait_replicas([n2, n3], {"r1": {"weight": 0.0}, "r2": {"role": "active"}}, 15)
        restored = time.monotonic() - died
        before = traffic.ok
        wait_until(lambda: traffic.ok >= before + 10, 20, message="traffic after the loss")
    assert traffic.errors == [], traffic.errors[:5]
    assert traffic.slowest < 10.0
    assert restored < 15.0, restored
    reps = n2.ops_replicas()
    assert reps["r1"]["health"] == "down" and "node n1 lost" in reps["r1"]["reason"], reps["r1"]
    lost_line = [ln for ln in c.ctl_ok(n3, "status").splitlines() if ln.startswith("LOST NODES")]
    assert lost_line and "n1" in lost_line[0], c.ctl_ok(n3, "status")
    nodes = {n["name"]: n for n in n2.ops_status()["nodes"]}
    assert nodes["n1"]["lost"] is True and nodes["n3"]["lost"] is False

    # it comes back: the lease says so, its replica reports healthy and serves again
    n1.sims["r1"] = c.start_sim(n1, n1.replicas[0], port=n1.sims["r1"].port)
    c.start_nodes([n1])
    wait_until(
        lambda: all(consensus(n)["lost_nodes"] == [] for n in (n1, n2, n3)),
        20,
        interval=0.2,
        message="n1 back everywhere",
    )
    c.wait_replicas(None, {"r1": {"health": "healthy"}}, timeout=20)
    events = c.ctl_ok(n3, "events")
    assert "node back" in events and "node lost" in events, events


def test_an_old_member_holds_the_cluster_version_and_a_node_that_cannot_apply_halts(
    cluster: RaftCluster,
) -> None:
    c = cluster
    n1, n2, n3 = c.nodes
    n3.env = {"HANODE_PROTOCOL": "1"}  # n3 runs "the previous release"
    c.start()
    c.wait_serving()
    c.wait_leader()

    def version_everywhere(want: int, nodes: list[Node]) -> bool:
        return all(consensus(n)["cluster_version"] == want for n in nodes)

    wait_until(lambda: version_everywhere(1, [n1, n2, n3]), 15, message="cluster version 1")
    assert all(consensus(n)["leader_term"] == 0 for n in (n1, n2))  # no protocol-2 claims
    assert consensus(n3)["protocol"] == 1 and consensus(n3)["halted"] is None

    # The old node leaves: the cluster moves to this code's protocol and the leader claims
    # its term.
    c.ctl_ok(n1, "members", "remove", n3.raft)
    c.stop_nodes([n3])
    wait_until(
        lambda: version_everywhere(PROTOCOL, [n1, n2]), 15, message=f"cluster version {PROTOCOL}"
    )
    wait_until(lambda: consensus(n1)["leader_term"] > 0, 15, message="a fenced leader claim")

    # An old node joins the upgraded cluster: it cannot apply the log, so it halts and says so.
    n4 = c.add_node("n4", [Replica("r4")])
    n4.env = {"HANODE_PROTOCOL": "1"}
    n4.spawn()
    n4.ready()
    c.ctl_ok(n1, "members", "add", n4.raft)
    wait_until(lambda: consensus(n4)["halted"] is not None, 20, message="n4 halts")
    halted = consensus(n4)
    # the first command it cannot apply is the leader's claim (protocol 2)
    assert "needs protocol 2" in halted["halted"] and halted["healthy"] is False, halted
    assert "HALTED" in c.ctl_ok(n4, "status")
    # it registered as protocol 1 all the same: the others hold the version down again
    wait_until(lambda: version_everywhere(1, [n1, n2]), 15, message="n4 holds the version")
    for node in (n1, n2):
        assert consensus(node)["halted"] is None
        node.ask()  # and the upgraded nodes keep serving


def test_leader_transfer_asked_of_a_follower_is_forwarded_to_the_leader(
    cluster: RaftCluster,
) -> None:
    c = cluster.start()
    leader = c.wait_leader()
    follower = next(n for n in c.nodes if n.name != leader)
    target = next(n for n in c.nodes if n.name not in (leader, follower.name))
    out = c.ctl_ok(follower, "leader", "transfer", "--to", target.raft)
    assert target.name in out, out
    assert c.wait_leader(timeout=15) == target.name
    wait_until(lambda: consensus(target)["leader_node"] == target.name, 15, message="fenced claim")
