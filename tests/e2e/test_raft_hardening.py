"""End-to-end: the leader's Raft port under the attacks of issue 16 (findings 3 and 4).

Three real nodes on loopback. An unauthenticated peer (this test, with raw sockets to
127.0.0.1) attacks the leader's Raft port:

- finding 3: connections that announce a 0x7fffffff-byte frame and then stream junk (pysyncobj
  used to buffer it quadratically before decrypting, and the leader fell out of consensus);
- finding 4: thousands of idle pre-auth connections with the leader's RLIMIT_NOFILE lowered
  (``resource.prlimit`` on that child only), up to EMFILE in ``accept()`` (pysyncobj used to
  unbind its listener for good).

Throughout, every answering node must name one and the same leader and operator writes
(``hanodectl drain``/``undrain`` through a follower) must succeed; after the attack the attacked
node must be whole again within 10 s: listening on its Raft port, every peer connected to it,
a write through its own control API applied.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hanode.devtools.procs import wait_until
from tests.e2e.cluster_support import Node, RaftCluster, Replica

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

ATTACK_S = 8.0
RECOVERY_S = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaftCluster]:
    layout = [("n1", [Replica("r1")]), ("n2", [Replica("r2")]), ("n3", [Replica("r3")])]
    c = RaftCluster(tmp_path_factory.mktemp("hardening"), layout)
    failed = True
    try:
        c.start()
        c.wait_serving()
        yield c
        failed = False
    finally:
        if failed:
            print(c.outputs())
        c.stop_all()


def _leader(c: RaftCluster) -> Node:
    name = c.wait_leader()
    return next(n for n in c.nodes if n.name == name)


def _listening(port: int) -> bool:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            return True
    return False


class Watch:
    """Samples every node's idea of the leader while an attack runs."""

    def __init__(self, c: RaftCluster) -> None:
        self.c = c
        self.samples: list[list[str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, node: Node) -> str | None:
        try:
            leader = node.ops_status(timeout=1.5)["leader"]
        except Exception:
            return None  # the attacked node may be slow to answer its ops port
        return str(leader) if leader else None

    def _run(self) -> None:
        for _ in range(400):  # bounded: ~0.3 s apart, ends with the attack
            if self._stop.wait(0.3):
                return
            self.samples.append(self.c.parallel(self._one, self.c.nodes))

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def leaders(self) -> set[str]:
        return {x for s in self.samples for x in s if x}

    def split(self) -> list[list[str | None]]:
        """Samples where two answering nodes named different leaders."""
        return [s for s in self.samples if len({x for x in s if x}) > 1]


def _writes(c: RaftCluster, via: Node, replica: str, until: float) -> list[float]:
    """drain/undrain ``replica`` through ``via`` until ``until``; returns each write's time."""
    took = []
    for _ in range(20):  # bounded
        if time.monotonic() >= until:
            break
        for verb in ("drain", "undrain"):
            start = time.monotonic()
            c.ctl_ok(via, verb, replica)
            took.append(time.monotonic() - start)
    return took


def _recovered(c: RaftCluster, victim: Node, leader_name: str) -> Callable[[], bool]:
    others = {n.raft for n in c.nodes if n is not victim}

    def check() -> bool:
        if not _listening(victim.raft_port):
            return False
        if c.wait_leader(timeout=1.0) != leader_name:
            return False
        connected = {m["address"] for m in c.members(victim) if m["connected"]}
        if not others <= connected:
            return False
        c.ctl_ok(victim, "drain", victim.replicas[0].name)
        c.ctl_ok(victim, "undrain", victim.replicas[0].name)
        return True

    return check


def _run_attack(
    c: RaftCluster, attack: Callable[[threading.Event], dict[str, int]]
) -> dict[str, Any]:
    victim = _leader(c)
    follower = next(n for n in c.nodes if n is not victim)
    stop = threading.Event()
    counts: dict[str, int] = {}

    def attacker() -> None:
        counts.update(attack(stop))

    thread = threading.Thread(target=attacker, daemon=True)
    with Watch(c) as watch:
        thread.start()
        end = time.monotonic() + ATTACK_S
        took = _writes(c, follower, follower.replicas[0].name, end)
        remaining = end - time.monotonic()
        if remaining > 0:
            stop.wait(remaining)
        stop.set()
        thread.join(30.0)
    ended = time.monotonic()
    wait_until(
        _recovered(c, victim, victim.name),
        RECOVERY_S,
        0.2,
        message=f"{victim.name} whole again after the attack",
    )
    recovery = time.monotonic() - ended
    result = {
        "victim": victim.name,
        "leaders": sorted(watch.leaders()),
        "samples": len(watch.samples),
        "split": watch.split(),
        "writes": len(took),
        "slowest_write_s": round(max(took), 2) if took else None,
        "recovery_s": round(recovery, 2),
        **counts,
    }
    print(result)
    assert not watch.split(), result
    assert watch.leaders() == {victim.name}, result  # no new election, no self-claimed leader
    assert took, result
    return result


def test_a_huge_length_prefix_does_not_take_the_leader_out_of_consensus(
    cluster: RaftCluster,
) -> None:
    victim = _leader(cluster)

    def attack(stop: threading.Event) -> dict[str, int]:
        junk = os.urandom(65536)
        connections = refused = 0
        while not stop.is_set() and connections < 2000:
            connections += 1
            try:
                with socket.create_connection(("127.0.0.1", victim.raft_port), 1.0) as sock:
                    sock.sendall(struct.pack("i", 0x7FFFFFFF))
                    for _ in range(256):  # up to 16 MiB of junk per connection
                        if stop.is_set():
                            break
                        sock.sendall(junk)
            except OSError:
                refused += 1  # closed on us: what the hardened transport does
        return {"connections": connections, "closed_by_victim": refused}

    result = _run_attack(cluster, attack)
    assert result["closed_by_victim"] >= result["connections"] - 1, result


def test_idle_connections_up_to_emfile_do_not_unbind_the_leaders_raft_port(
    cluster: RaftCluster,
) -> None:
    victim = _leader(cluster)
    assert victim.proc is not None
    pid = victim.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 24, hard))

    def attack(stop: threading.Event) -> dict[str, int]:
        held: list[socket.socket] = []
        failed = 0
        try:
            while not stop.is_set() and len(held) + failed < 4000:
                try:
                    held.append(socket.create_connection(("127.0.0.1", victim.raft_port), 0.5))
                except OSError:
                    failed += 1
                if len(held) % 200 == 0:
                    stop.wait(0.05)  # ~thousands in a few seconds, not a busy loop
        finally:
            for sock in held:
                with contextlib.suppress(OSError):
                    sock.close()
        return {"idle_connections": len(held), "connect_failures": failed}

    try:
        result = _run_attack(cluster, attack)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert result["idle_connections"] >= 1000, result
    log = "".join(p.read_text(errors="replace") for p in cluster.tmp_path.glob("n*-run*.log"))
    assert "raft_accept_paused" in log, "the attack never reached EMFILE"


def test_draining_the_last_serving_replica_is_refused_unless_forced(cluster: RaftCluster) -> None:
    """Finding 10: hanodectl drain of the last serving replicas was accepted (model 503)."""
    c = cluster
    c.ctl_ok(0, "drain", "r1")
    c.ctl_ok(0, "drain", "r2")
    try:
        refused = c.ctl(0, "drain", "r3")
        assert refused.returncode != 0, refused
        assert "sim-model" in refused.stderr and "--force" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert c.wait_replicas(None, {"r3": {"admin": "enabled"}}, 5.0)
        assert c.nodes[0].ask() == "r3"  # the model still answers
        c.ctl_ok(0, "drain", "r3", "--force")
        c.wait_replicas(None, {"r3": {"admin": "drained"}})
    finally:
        for name in ("r1", "r2", "r3"):
            c.ctl_ok(0, "undrain", name)
    c.wait_serving()


def test_a_member_removed_and_added_again_comes_back_with_its_replicas(
    cluster: RaftCluster,
) -> None:
    """Finding 6: members remove then members add (no restart) silently dropped its replicas."""
    c = cluster
    victim = c.nodes[2]
    others = c.nodes[:2]
    c.wait_leader()
    via = others[0]  # if the victim leads, remove hands the lead over first
    c.ctl_ok(via, "members", "remove", victim.raft)
    wait_until(
        lambda: all("r3" not in n.ops_replicas() for n in others),
        20.0,
        0.2,
        message="r3 forgotten by the remaining members",
    )
    c.ctl_ok(via, "members", "add", victim.raft)
    c.wait_replicas(None, {"r3": {"health": "healthy"}}, timeout=30.0)
    c.wait_serving()
