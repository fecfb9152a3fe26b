"""The cluster runtime against an in-memory store and a fake router: breaker sync both ways,
ejection limits, resets, re-reporting, advertised addresses and the consensus watchdog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from hanode.cluster.document import PROTOCOL, Doc, empty_doc
from hanode.cluster.runtime import MAX_RESYNCS, ClusterRuntime
from hanode.cluster.state import apply
from hanode.config import Config, parse_config
from hanode.events import EventLog
from hanode.policies.breaker import BreakerConfig, ReplicaBreaker, Transition
from hanode.policies.failure import FailureClass
from hanode.policies.weights import WeightThresholds
from hanode.pool.replica import HealthLevel, Observation
from tests.unit.cluster.fake_store import FakeStore
from tests.unit.cluster.helpers import spec


def config(max_ejection_percent: float = 50.0) -> Config:
    data: dict[str, Any] = {
        "node": {"name": "n1", "data_dir": "/tmp/hanode-test", "advertise_host": "10.9.0.1"},
        "router": {"listen": "0.0.0.0:8080"},
        "metrics": {"listen": "127.0.0.1:9100"},
        "cluster": {"raft_listen": "10.9.0.1:7001", "peers": ["10.9.0.2:7001"]},
        "breaker": {"max_ejection_percent": max_ejection_percent},
        "replicas": [{"name": "own-0", "model": "m", "url": "http://127.0.0.1:8001"}],
    }
    return parse_config(data, "test.toml")


class FakeDoor:
    """The router side of the breaker seam, with real breakers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.on_breaker_open: Any = None

    def listen_breaker_opens(self, listener: Any) -> None:
        self.on_breaker_open = listener
        self.breakers: dict[str, ReplicaBreaker] = {}
        self.changes: list[tuple[str, list[Transition], bool]] = []
        self.pool_changes = 0

    def breaker(self, replica: str) -> ReplicaBreaker:
        return self.breakers.setdefault(replica, ReplicaBreaker(BreakerConfig()))

    def breaker_changed(
        self, replica: str, transitions: Sequence[Transition], *, local: bool = True
    ) -> None:
        self.changes.append((replica, list(transitions), local))

    def pool_changed(self) -> None:
        self.pool_changes += 1

    def peer_opened(self, replica: str, failure: FailureClass, until: float) -> None:
        transitions = self.breaker(replica).force_open(self.loop.time(), failure, until)
        self.breaker_changed(replica, transitions, local=False)

    def reset_breaker(self, replica: str) -> None:
        self.breaker_changed(replica, self.breaker(replica).reset(self.loop.time()), local=False)


def pool_doc(n_replicas: int) -> Doc:
    doc = empty_doc()
    for node in ("n1", "n2"):
        apply(
            doc,
            {"op": "register_node", "name": node, "raft": f"h:{node}", "protocol": 2, "ts": 1.0},
        )
    for i in range(n_replicas):
        name = f"r{i}"
        apply(doc, {"op": "register_replica", "spec": spec(name, node="n2"), "ts": 1.0})
        apply(doc, {"op": "observe", "replica": name, "obs": {"level": 3}, "ts": 1.0})
    return doc


def peer_open(replica: str, open_id: str, open_s: float = 5.0) -> dict[str, Any]:
    return {
        "op": "open_breaker",
        "replica": replica,
        "failure_class": "server_error",
        "open_s": open_s,
        "node": "n2",
        "id": open_id,
        "ts": 1.0,
        "v": 2,
    }


async def started(store: FakeStore, cfg: Config | None = None) -> tuple[ClusterRuntime, FakeDoor]:
    runtime = ClusterRuntime(cfg or config(), store, WeightThresholds(), EventLog())
    door = FakeDoor(asyncio.get_running_loop())
    runtime.attach(door)
    return runtime, door


def is_open(door: FakeDoor, name: str) -> bool:
    return door.breaker(name).snapshot(door.loop.time())["state"] == "open"


def test_a_peer_breaker_opens_here_for_its_duration_whatever_the_clocks() -> None:
    async def go() -> None:
        store = FakeStore(pool_doc(4))
        _runtime, door = await started(store)
        store.apply_now({**peer_open("r0", "a"), "ts": time.time() + 120.0})  # skewed writer
        assert is_open(door, "r0")
        until = door.breaker("r0").snapshot(door.loop.time())["open_until"]
        assert isinstance(until, float)
        assert until - door.loop.time() == pytest.approx(5.0, abs=0.5)
        store.apply_now({"op": "set_weights", "weights": {}, "ts": 2.0})  # another view
        assert sum(1 for r, _, local in door.changes if r == "r0" and not local) == 1

    asyncio.run(go())


def test_peer_breakers_never_eject_more_than_the_limit() -> None:
    async def go() -> None:
        store = FakeStore(pool_doc(4))
        runtime, door = await started(store)
        for i in range(4):
            store.apply_now(peer_open(f"r{i}", f"id{i}"))
        assert [is_open(door, f"r{i}") for i in range(4)] == [True, True, False, False]
        assert runtime.skipped_peer_opens == 2
        # this router's own breakers are not capped
        for _ in range(5):
            door.breaker("r2").on_failure(FailureClass.SERVER_ERROR, door.loop.time())
        assert is_open(door, "r2")

    asyncio.run(go())


def test_a_single_replica_model_is_never_ejected_by_a_peer() -> None:
    async def go() -> None:
        store = FakeStore(pool_doc(1))
        _, door = await started(store)
        store.apply_now(peer_open("r0", "a"))
        assert not is_open(door, "r0")

    asyncio.run(go())


def test_local_opens_are_replicated_as_durations_only_when_everyone_can_apply_them() -> None:
    async def go() -> None:
        store = FakeStore(pool_doc(2))
        _runtime, door = await started(store)
        assert door.on_breaker_open is not None
        door.on_breaker_open("r1", "gpu_oom", door.loop.time() + 5.0)
        for _ in range(10):
            await asyncio.sleep(0)
        sent = [c for c in store.submitted if c["op"] == "open_breaker"]
        assert len(sent) == 1 and sent[0]["open_s"] == pytest.approx(5.0, abs=0.1)
        assert sent[0]["v"] == 2 and "until" not in sent[0]
        # an old member joins: the cluster version drops and opens stay local
        store.apply_now({"op": "register_node", "name": "old", "raft": "h:o", "ts": 1.0})
        door.on_breaker_open("r0", "gpu_oom", door.loop.time() + 5.0)
        for _ in range(10):
            await asyncio.sleep(0)
        assert len([c for c in store.submitted if c["op"] == "open_breaker"]) == 1

    asyncio.run(go())


def test_resets_before_start_are_ignored_later_ones_applied() -> None:
    async def go() -> None:
        doc = pool_doc(2)
        apply(doc, {"op": "reset_breaker", "replica": "r0", "by": "x", "ts": 1.0})
        store = FakeStore(doc)
        _, door = await started(store)
        assert door.changes == []
        store.apply_now({"op": "reset_breaker", "replica": "r0", "by": "x", "ts": 2.0})
        store.apply_now({"op": "reset_breaker", "replica": "r1", "by": "x", "ts": 0.5})
        assert [r for r, _, _ in door.changes] == ["r0", "r1"]  # order of ts does not matter

    asyncio.run(go())


def test_observations_are_resent_when_the_state_says_otherwise() -> None:
    async def go() -> None:
        store = FakeStore(pool_doc(0))
        runtime, _ = await started(store)
        apply(store.doc, {"op": "register_replica", "spec": spec("own-0", node="n1"), "ts": 1})
        runtime.reporter.observe("own-0", Observation(level=HealthLevel.HEALTHY))
        for _ in range(10):
            await asyncio.sleep(0)
        assert store.view.replicas["own-0"].observation.level is HealthLevel.HEALTHY
        assert runtime.reporter.sent("own-0") is not None
        # a lease marked our node lost (we were cut off): the state says DOWN
        store.apply_now({"op": "claim_leader", "node": "n2", "term": 2, "ts": 1.0, "v": 2})
        lost = {"op": "node_lost", "name": "n1", "term": 2, "leader": "n2", "ts": 2.0, "v": 2}
        store.apply_now(lost)
        assert runtime.reporter.sent("own-0") is None  # the next check reports afresh

    asyncio.run(go())


def test_registration_advertises_reachable_addresses_and_keeps_local_urls() -> None:
    async def go() -> None:
        store = FakeStore(empty_doc())
        runtime, _ = await started(store)
        runtime.start({"raft": "10.9.0.1:7001", "router": "0.0.0.0:8080", "ops": "127.0.0.1:1"})
        for _ in range(50):
            await asyncio.sleep(0)
            if "own-0" in store.view.replicas:
                break
        await runtime.close()
        node = store.view.nodes["n1"]
        assert (node.router, node.ops, node.raft) == (
            "10.9.0.1:8080",
            "10.9.0.1:1",
            "10.9.0.1:7001",
        )
        assert node.protocol == PROTOCOL
        assert store.view.replicas["own-0"].spec.url == "http://10.9.0.1:8001"
        # this node's router still dials its own replica on loopback
        assert runtime.pool.snapshot.replicas["own-0"].spec.url == "http://127.0.0.1:8001"

    asyncio.run(go())


def test_a_dead_consensus_thread_stops_the_node() -> None:
    async def go() -> None:
        store = FakeStore(pool_doc(1))
        problems: list[str] = []
        runtime = ClusterRuntime(
            config(), store, WeightThresholds(), EventLog(), on_fatal=problems.append
        )
        runtime.start({"raft": "10.9.0.1:7001"})
        store.problem = "the consensus thread has died"
        for _ in range(40):  # the watchdog looks once a second
            await asyncio.sleep(0.1)
            if problems:
                break
        await runtime.close()
        assert problems == ["the consensus thread has died"]
        assert runtime.consensus_failure == problems[0]

    asyncio.run(go())


def test_each_checkpoint_is_reported_once_and_a_diverged_state_is_resynced() -> None:
    async def go() -> None:
        store = FakeStore(pool_doc(1))
        runtime, _ = await started(store)
        store.apply_now({"op": "claim_leader", "node": "n2", "term": 2, "ts": 1.0, "v": 2})
        fence = {"term": 2, "leader": "n2", "v": 2}
        store.digests["c1"] = "mine"
        store.apply_now({"op": "checkpoint", "id": "c1", **fence, "ts": 2.0})
        for _ in range(10):
            await asyncio.sleep(0)
        reports = [c for c in store.submitted if c["op"] == "checkpoint_report"]
        assert [(r["id"], r["node"], r["digest"]) for r in reports] == [("c1", "n1", "mine")]
        # n2 agrees with us: nothing to do
        report = {"op": "checkpoint_report", "id": "c1", "ts": 3.0, "v": 2}
        store.apply_now({**report, "node": "n2", "digest": "mine"})
        assert store.resyncs == [] and not runtime.resyncing
        assert len([c for c in store.submitted if c["op"] == "checkpoint_report"]) == 1

        # the next checkpoint: the two others agree on another state than ours
        store.digests["c2"] = "mine"
        store.apply_now({"op": "checkpoint", "id": "c2", **fence, "ts": 4.0})
        store.apply_now(
            {"op": "register_node", "name": "n3", "raft": "h:n3", "protocol": 2, "ts": 4.0}
        )
        store.apply_now({**report, "id": "c2", "node": "n2", "digest": "theirs"})
        assert store.resyncs == []  # one other node is not a majority of three
        store.apply_now({**report, "id": "c2", "node": "n3", "digest": "theirs"})
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(store.resyncs) == 1 and "differs from theirs" in store.resyncs[0]
        assert runtime.resyncs == 1 and not runtime.resyncing
        events = [e.message for e in runtime.events.recent(10)]
        assert any("took the cluster's state again" in m for m in events), events

        # diverging again and again is a bug: after MAX_RESYNCS the node stops
        problems: list[str] = []
        runtime.on_fatal = problems.append
        for i in range(3, 3 + MAX_RESYNCS + 1):
            cid = f"c{i}"
            store.digests[cid] = "mine"
            store.apply_now({"op": "checkpoint", "id": cid, **fence, "ts": 5.0})
            store.apply_now({**report, "id": cid, "node": "n2", "digest": "theirs"})
            store.apply_now({**report, "id": cid, "node": "n3", "digest": "theirs"})
            for _ in range(20):
                await asyncio.sleep(0)
        assert runtime.resyncs == MAX_RESYNCS
        assert len(problems) == 1 and "diverged again" in problems[0]
        await runtime.close()

    asyncio.run(go())


def test_a_member_whose_node_record_was_forgotten_registers_again() -> None:
    """Issue 16, finding 6: members remove (forget_node) then members add, no restart."""

    async def go() -> None:
        store = FakeStore(pool_doc(1))
        runtime, _door = await started(store)
        runtime.start({"raft": "10.9.0.1:7001"})

        async def registered() -> bool:
            for _ in range(100):  # bounded: 2 s
                if "n1" in store.view.nodes and "own-0" in store.view.replicas:
                    return True
                await asyncio.sleep(0.02)
            return False

        assert await registered()
        store.apply_now({"op": "forget_node", "name": "n1", "ts": 2.0})
        assert "own-0" not in store.view.replicas
        assert await registered(), "the node never registered again"
        await runtime.close()

    asyncio.run(go())
