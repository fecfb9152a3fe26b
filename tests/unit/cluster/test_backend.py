"""The control backend of a cluster node, against an in-memory store and a real front door."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from hanode.api.control import ControlError, ControlErrorCode
from hanode.cluster.backend import ClusterControl
from hanode.cluster.document import PROTOCOL
from hanode.cluster.runtime import ClusterRuntime
from hanode.cluster.store import ConsensusTimeout
from hanode.events import EventLog
from hanode.metrics.registry import NodeMetrics
from hanode.policies.weights import WeightThresholds
from hanode.router.frontdoor import FrontDoor, RouterSettings
from tests.unit.cluster.fake_store import FakeStore
from tests.unit.cluster.test_runtime import config, pool_doc

T = TypeVar("T")


def with_control(
    test: Callable[[ClusterControl, FakeStore], Awaitable[T]], store: FakeStore | None = None
) -> T:
    async def go() -> T:
        s = store or FakeStore(pool_doc(2))
        runtime = ClusterRuntime(config(), s, WeightThresholds(), EventLog())
        door = FrontDoor(runtime.pool, RouterSettings(), NodeMetrics())
        runtime.attach(door.core)
        return await test(ClusterControl(runtime, door.core), s)

    return asyncio.run(go())


def code_of(exc_info: pytest.ExceptionInfo[ControlError]) -> ControlErrorCode:
    return exc_info.value.code


def test_drain_a_node_drains_its_replicas_through_consensus() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        assert await control.drain(node="n2", force=True) == ["r0", "r1"]
        assert {r.admin.value for r in store.view.replicas.values()} == {"drained"}
        assert store.submitted[-1]["by"] == "n1"
        assert await control.undrain(replica="r1") == ["r1"]
        assert await control.drain(node="n1") == []  # a node without replicas: nothing to do
        cases: list[dict[str, Any]] = [{}, {"replica": "r0", "node": "n2"}]
        for kwargs in cases:
            with pytest.raises(ControlError) as err:
                await control.drain(**kwargs)
            assert code_of(err) is ControlErrorCode.INVALID
        with pytest.raises(ControlError) as err:
            await control.drain(node="nope")
        assert code_of(err) is ControlErrorCode.NOT_FOUND and "known: n1, n2" in str(err.value)

    with_control(test)


def test_writes_need_a_quorum_and_a_timeout_is_an_unknown_outcome() -> None:
    class SlowStore(FakeStore):
        async def submit(self, command: dict[str, Any], timeout: float = 3.0) -> Any:
            raise ConsensusTimeout("no answer within 5s (outcome unknown)")

    async def test(control: ClusterControl, store: FakeStore) -> None:
        store.quorum = False
        with pytest.raises(ControlError) as err:
            await control.drain(replica="r0")
        assert code_of(err) is ControlErrorCode.UNAVAILABLE and store.submitted == []
        store.quorum = True
        with pytest.raises(ControlError) as err:
            await control.drain(replica="r0")
        assert code_of(err) is ControlErrorCode.UNKNOWN_OUTCOME

    with_control(test, SlowStore(pool_doc(2)))


def test_the_last_serving_active_replica_cannot_be_demoted() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        # r1's node is lost: r1 does not count as another serving replica of the model
        store.apply_now({"op": "register_node", "name": "n3", "raft": "h:3", "ts": 1.0})
        store.doc["replicas"]["r1"]["spec"]["node"] = "n3"
        store.doc["nodes"]["n3"]["lost"] = True
        store.publish()
        with pytest.raises(ControlError) as err:
            await control.demote("r0")
        assert code_of(err) is ControlErrorCode.FAILED_PRECONDITION
        assert "last serving active replica" in str(err.value)
        store.doc["nodes"]["n3"]["lost"] = False
        store.publish()
        await control.demote("r0")
        assert store.view.replicas["r0"].role.value == "standby"
        with pytest.raises(ControlError) as err:
            await control.promote("ghost")
        assert code_of(err) is ControlErrorCode.NOT_FOUND

    with_control(test)


def test_status_says_how_consensus_stands() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        store.apply_now({"op": "claim_leader", "node": "n1", "term": 4, "ts": 1.0, "v": 2})
        store.term = 4
        lost = {"op": "node_lost", "name": "n2", "term": 4, "leader": "n1", "ts": 2.0, "v": 2}
        store.apply_now(lost)
        doc = control.status()
        c = doc["consensus"]
        assert c["healthy"] is True and c["halted"] is None and c["problem"] is None
        assert (c["term"], c["leader_term"], c["leader_node"]) == (4, 4, "n1")
        assert c["cluster_version"] == 2 and c["protocol"] == PROTOCOL  # n1, n2 say 2
        assert c["state_digest"] == store.view.digest and c["lost_nodes"] == ["n2"]
        nodes = {n["name"]: n for n in doc["nodes"]}
        assert nodes["n2"]["lost"] is True and nodes["n1"]["lost"] is False
        reps = {r["name"]: r for r in doc["replicas"]}
        assert reps["r0"]["weight"] == 0.0 and reps["r0"]["reason"] == "node n2 lost"
        store.problem = "the consensus thread has died"
        c = control.status()["consensus"]
        assert c["healthy"] is False and c["thread_alive"] is False

    with_control(test)


def test_replicated_breakers_are_listed_with_this_routers_deadline() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        store.apply_now(
            {
                "op": "open_breaker",
                "replica": "r0",
                "failure_class": "gpu_oom",
                "open_s": 30.0,
                "node": "n2",
                "id": "b1",
                "ts": 1e12,  # the opener's clock is far off: nothing here depends on it
                "v": 2,
            }
        )
        listed = [b for b in control.breakers() if b["source"] == "cluster"]
        assert len(listed) == 1 and listed[0]["state"] == "open" and listed[0]["node"] == "n2"
        assert listed[0]["until"] == pytest.approx(time.time() + 30.0, abs=2.0)

    with_control(test)


def test_draining_the_last_serving_replicas_of_a_model_is_refused_unless_forced() -> None:
    """Issue 16, finding 10: drain used to accept what demote refuses (the model went 503)."""

    async def test(control: ClusterControl, store: FakeStore) -> None:
        model = store.view.replicas["r0"].spec.model
        assert await control.drain(replica="r0") == ["r0"]  # r1 still serves
        with pytest.raises(ControlError) as err:
            await control.drain(replica="r1")
        assert code_of(err) is ControlErrorCode.FAILED_PRECONDITION
        assert model in str(err.value) and "--force" in str(err.value)
        assert store.view.replicas["r1"].admin.value == "enabled"
        await control.undrain(replica="r0")
        with pytest.raises(ControlError) as err:  # a whole node holding the last ones
            await control.drain(node="n2")
        assert code_of(err) is ControlErrorCode.FAILED_PRECONDITION and model in str(err.value)
        assert await control.drain(node="n2", force=True) == ["r0", "r1"]
        assert {r.admin.value for r in store.view.replicas.values()} == {"drained"}
        assert await control.drain(replica="r0") == ["r0"]  # nothing serves any more: harmless

    with_control(test)
