"""``[router] workers = 2``: two data-plane processes serve one node's router port.

One cluster node (Raft, one member) over three simulators, with two workers. Clients keep one
connection each, and the kernel says which worker holds it (workers_support.owner_of), so each
test knows which worker served what:

* requests through both workers add up in the node's one set of metrics;
* a breaker opened by traffic through one worker is open in the other, which never saw a
  failure, and in the cluster (hanodectl breakers);
* a drain applied under load stops the replica's traffic from both workers within a second;
* a worker killed under load is restarted; no request on the other worker fails, and the port
  keeps taking new connections meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hanode.devtools.procs import NodeProcess, free_port, node_config_toml, start_sim, wait_until
from tests.e2e.cluster_support import RaftCluster, Replica
from tests.e2e.workers_support import MODEL, KeepAliveClient, Outcome, spread_clients

pytestmark = pytest.mark.timeout(240)

SIM = ("--ttft-ms", "2", "--tpot-ms", "2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftCluster]:
    tmp: Path = tmp_path_factory.mktemp("workers")
    c = RaftCluster(
        tmp,
        [
            (
                "n1",
                [
                    Replica("r1", sim_args=SIM),
                    Replica("r2", sim_args=SIM),
                    Replica("r3", sim_args=SIM),
                ],
            )
        ],
        sections={"router": {"workers": 2}, "breaker": {"max_ejection_percent": 100}},
    )
    try:
        c.start()
        c.wait_leader()
        c.wait_replicas(None, {n: {"health": "healthy"} for n in ("r1", "r2", "r3")})
        yield c
    finally:
        c.stop_all()


def workers_of(c: RaftCluster) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = c.nodes[0].ops_status()["workers"]
    return workers


def worker_pids(c: RaftCluster) -> list[int]:
    pids = [w["pid"] for w in workers_of(c) if w["up"]]
    assert len(pids) == 2, workers_of(c)
    return pids


def sim_requests(c: RaftCluster, name: str) -> int:
    return c.nodes[0].chat_requests(name)


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_load(
    clients: list[KeepAliveClient], stop: threading.Event, max_requests: int = 5000
) -> list[threading.Thread]:
    """Each client asks in a loop on its own connection until ``stop`` (bounded)."""

    def loop(client: KeepAliveClient) -> None:
        for _ in range(max_requests):
            if stop.is_set():
                return
            client.ask()

    threads = [threading.Thread(target=loop, args=(cl,), daemon=True) for cl in clients]
    for t in threads:
        t.start()
    return threads


def join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a client thread did not stop"


def test_requests_through_both_workers_add_up_in_one_set_of_metrics(cluster: RaftCluster) -> None:
    c = cluster
    node = c.nodes[0]
    pids = worker_pids(c)
    clients = spread_clients(node.router_port, pids, per_worker=2)
    before = metric_sum(node.proc.metrics_text(), "hanode_requests_total")  # type: ignore[union-attr]
    served_before = {w["pid"]: w["requests"] for w in workers_of(c)}
    for _ in range(25):
        for client in clients:
            assert client.ask().ok, client.outcomes[-1]
    for client in clients:
        client.close()
    sent = 25 * len(clients)
    by_worker = {pid: sum(1 for cl in clients if cl.owner == pid) * 25 for pid in pids}

    def settled() -> dict[str, Any] | None:
        text = node.proc.metrics_text()  # type: ignore[union-attr]
        workers = {w["pid"]: w["requests"] for w in workers_of(c)}
        total = metric_sum(text, "hanode_requests_total") - before
        grown = {pid: workers[pid] - served_before.get(pid, 0) for pid in pids}
        ok = total == sent and grown == by_worker
        return {"total": total, "grown": grown} if ok else None

    wait_until(settled, timeout=10, interval=0.1, message="node metrics = requests sent")
    text = node.proc.metrics_text()  # type: ignore[union-attr]
    # one family each, not one per process
    assert len(re.findall(r"^# TYPE hanode_requests_total counter", text, re.M)) == 1
    # the node's own per-replica gauges are there once, from the node's process
    assert len(re.findall(r'^hanode_replica_weight\{[^}]*replica="r1"', text, re.M)) == 1


def test_a_breaker_opened_in_one_worker_is_open_in_the_other(cluster: RaftCluster) -> None:
    c = cluster
    node = c.nodes[0]
    pids = worker_pids(c)
    clients = spread_clients(node.router_port, pids, per_worker=1)
    tripper = clients[0]
    other = next(cl for cl in clients if cl.owner != tripper.owner)
    sim = node.sims["r2"]
    sim.admin("faults", {"oom": 1.0})
    try:
        # Only the tripper's worker sees r2 fail; retries keep its requests successful.
        def tripped() -> bool:
            assert tripper.ask().ok, tripper.outcomes[-1]
            w = {x["pid"]: x for x in workers_of(c)}
            return w[tripper.owner]["breakers"].get("r2") == "open"

        wait_until(tripped, timeout=15, interval=0.0, message="the tripper's worker opens r2")
        opened_at = time.monotonic()

        def other_open() -> float | None:
            w = {x["pid"]: x for x in workers_of(c)}
            return time.monotonic() if w[other.owner]["breakers"].get("r2") == "open" else None

        # Its report comes every 0.5 s: the open itself is mirrored at once (checked below).
        wait_until(other_open, timeout=5, interval=0.05, message="the other worker opens r2")
        # The other worker sends nothing to r2 now.
        before = sim_requests(c, "r2")
        for _ in range(30):
            assert other.ask().ok, other.outcomes[-1]
        assert sim_requests(c, "r2") == before, "the other worker still sent to r2"
        assert time.monotonic() - opened_at < 30
        # The node's breaker record (status) and the cluster's (hanodectl) have it too.
        assert node.ops_replicas()["r2"]["breaker"]["state"] == "open"
        rows = [r for r in c.breakers(0) if r["replica"] == "r2"]
        assert any(r["state"] == "open" for r in rows), rows
    finally:
        sim.admin("faults", {"clear": True})
        c.ctl_ok(0, "reset-breaker", "r2")
        for cl in clients:
            cl.close()

    def all_closed() -> bool:
        return all("r2" not in w["breakers"] for w in workers_of(c))

    wait_until(all_closed, timeout=10, interval=0.1, message="the reset reaches both workers")


def test_a_drain_under_load_stops_traffic_from_every_worker_within_a_second(
    cluster: RaftCluster,
) -> None:
    c = cluster
    node = c.nodes[0]
    pids = worker_pids(c)
    clients = spread_clients(node.router_port, pids, per_worker=2)
    stop = threading.Event()
    threads = run_load(clients, stop)
    try:
        wait_until(
            lambda: sim_requests(c, "r1") > 20, timeout=10, interval=0.05, message="r1 in use"
        )
        c.ctl_ok(0, "drain", "r1")
        applied_at = time.monotonic()
        c.wait_replicas(None, {"r1": {"admin": "drained"}}, timeout=5)
        rest = 1.0 - (time.monotonic() - applied_at)
        if rest > 0:
            threading.Event().wait(rest)  # the bound under test: one second after the drain
        after_second = sim_requests(c, "r1")
        served = {
            pid: len([o for cl in clients if cl.owner == pid for o in cl.outcomes]) for pid in pids
        }

        def both_served_more() -> bool:
            now = {
                pid: len([o for cl in clients if cl.owner == pid for o in cl.outcomes])
                for pid in pids
            }
            return all(now[p] >= served[p] + 50 for p in pids)

        wait_until(both_served_more, timeout=20, interval=0.05, message="both workers serve on")
        assert sim_requests(c, "r1") == after_second, "a worker still sent to r1 after 1 s"
    finally:
        stop.set()
        join(threads)
        for cl in clients:
            cl.close()
        c.ctl_ok(0, "undrain", "r1")
    failed = [o for cl in clients for o in cl.outcomes if not o.ok]
    assert not failed, failed[:5]
    c.wait_replicas(None, {"r1": {"admin": "enabled"}}, timeout=5)


def test_a_killed_worker_is_restarted_and_the_other_loses_no_request(cluster: RaftCluster) -> None:
    c = cluster
    node = c.nodes[0]
    pids = worker_pids(c)
    victim, survivor = pids
    clients = spread_clients(node.router_port, pids, per_worker=3)
    total_before = metric_sum(node.proc.metrics_text(), "hanode_requests_total")  # type: ignore[union-attr]
    stop = threading.Event()
    threads = run_load(clients, stop)
    newcomers: list[Outcome] = []
    try:
        wait_until(
            lambda: all(len(cl.outcomes) >= 10 for cl in clients),
            timeout=15,
            interval=0.05,
            message="load on both workers",
        )
        os.kill(victim, signal.SIGKILL)
        # Once the victim is gone (its socket with it), new connections all go to the
        # survivor. (A connection that reached the victim's accept queue in the instant it
        # died is reset unless net.ipv4.tcp_migrate_req=1 moves it: docs/workers.md.)
        wait_until(lambda: not alive(victim), timeout=10, interval=0.01, message="victim gone")
        for _ in range(10):
            fresh = KeepAliveClient(node.router_port, [survivor])
            newcomers.append(fresh.ask())
            fresh.close()

        def replaced() -> int | None:
            ws = workers_of(c)
            new = [w["pid"] for w in ws if w["up"] and w["pid"] not in (victim, survivor)]
            return new[0] if new else None

        new_pid = wait_until(replaced, timeout=30, interval=0.1, message="the worker restarted")
        threading.Event().wait(0.5)  # some more load through the survivor
    finally:
        stop.set()
        join(threads)
        for cl in clients:
            cl.close()
    on_survivor = [o for cl in clients for o in cl.outcomes if o.owner == survivor]
    assert on_survivor and all(o.ok for o in on_survivor), [o for o in on_survivor if not o.ok][:5]
    assert all(o.ok for o in newcomers), newcomers
    # the restarted worker serves
    fresh_clients = spread_clients(node.router_port, [survivor, new_pid], per_worker=1)
    for cl in fresh_clients:
        assert cl.ask().ok, cl.outcomes[-1]
        cl.close()
    status = {w["pid"]: w for w in workers_of(c)}
    assert status[new_pid]["restarts"] == 1 and status[new_pid]["last_exit"] == -signal.SIGKILL
    # the node's totals did not go down with the dead worker's counters
    assert metric_sum(node.proc.metrics_text(), "hanode_requests_total") >= total_before  # type: ignore[union-attr]
    events = node.ops_status()["events"]
    assert any(e["kind"] == "worker" and str(victim) in e["message"] for e in events), events


# -- stopping: a standalone node of its own ---------------------------------------------------
STREAM = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 40,
        "stream": True,
    }
).encode()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.fixture
def lone_node(tmp_path: Path) -> Iterator[tuple[NodeProcess, Any]]:
    sim = start_sim("--model", MODEL, "--ttft-ms", "2", "--tpot-ms", "50")
    (tmp_path / "data").mkdir()
    config = tmp_path / "node.toml"
    config.write_text(
        node_config_toml(
            name="lone",
            data_dir=tmp_path / "data",
            router_port=free_port(),
            metrics_port=free_port(),
            replicas=[{"name": "s0", "model": MODEL, "url": sim.url, "engine": "vllm"}],
            sections={
                "router": {"workers": 2, "drain_timeout_s": 20.0},
                "health": {"interval_s": 0.3},
            },
        )
    )
    node = NodeProcess(config, log_path=tmp_path / "node.log")
    try:
        node.wait_health({"s0": "healthy"})
        yield node, sim
    finally:
        node.stop()
        sim.stop()


def lone_pids(node: NodeProcess) -> list[int]:
    pids = [w["pid"] for w in node.status()["workers"] if w["up"]]
    assert len(pids) == 2
    return pids


def test_stopping_the_node_lets_streams_on_every_worker_finish_and_leaves_no_worker(
    lone_node: tuple[NodeProcess, Any],
) -> None:
    node, sim = lone_node
    pids = lone_pids(node)
    clients = spread_clients(node.router_port, pids, per_worker=1)
    for cl in clients:
        cl.body = STREAM
    threads = [threading.Thread(target=cl.ask, daemon=True) for cl in clients]
    for t in threads:
        t.start()
    wait_until(
        lambda: sim.admin("state")["running"] == 2,
        timeout=10,
        interval=0.02,
        message="a stream in flight on each worker",
    )
    node.proc.send_signal(signal.SIGTERM)  # type: ignore[attr-defined]
    join(threads)
    for cl in clients:
        (out,) = cl.outcomes
        assert out.ok and "[DONE]" in out.detail, out
    assert node.proc.wait(timeout=30) == 0  # type: ignore[attr-defined]
    wait_until(
        lambda: not any(alive(p) for p in pids),
        timeout=10,
        interval=0.05,
        message="every worker gone with the node",
    )


def test_workers_stop_by_themselves_when_the_node_is_killed(
    lone_node: tuple[NodeProcess, Any],
) -> None:
    node, _ = lone_node
    pids = lone_pids(node)
    node.proc.kill()  # type: ignore[attr-defined]
    node.proc.wait(timeout=10)  # type: ignore[attr-defined]
    # Their channel to the node closed: each drains (at most 5 s) and exits.
    wait_until(
        lambda: not any(alive(p) for p in pids),
        timeout=20,
        interval=0.05,
        message="orphaned workers exit",
    )
