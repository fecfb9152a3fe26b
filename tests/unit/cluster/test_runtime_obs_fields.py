"""Observation fields a protocol-2 member does not know (tpot_ms, gpu_growth) are sent only once
every member speaks protocol 3: an old node would drop them and its state digest would differ."""

from __future__ import annotations

import asyncio

from hanode.cluster.state import apply
from hanode.pool.replica import HealthLevel, Observation
from tests.unit.cluster.fake_store import FakeStore
from tests.unit.cluster.helpers import spec
from tests.unit.cluster.test_runtime import pool_doc, started

OBS = Observation(level=HealthLevel.HEALTHY, ttft_ms=30.0, tpot_ms=5.0, gpu_growth=0.01)


def sent_obs(protocols: dict[str, int]) -> dict[str, object]:
    async def go() -> dict[str, object]:
        doc = pool_doc(0)
        for node, protocol in protocols.items():
            cmd = {"op": "register_node", "name": node, "raft": f"h:{node}", "ts": 1.0}
            apply(doc, {**cmd, "protocol": protocol})
        store = FakeStore(doc)
        runtime, _ = await started(store)
        apply(store.doc, {"op": "register_replica", "spec": spec("own-0", node="n1"), "ts": 1})
        runtime.reporter.observe("own-0", OBS)
        for _ in range(10):
            await asyncio.sleep(0)
        (cmd,) = [c for c in store.submitted if c["op"] == "observe"]
        obs: dict[str, object] = cmd["obs"]
        return obs

    return asyncio.run(go())


def test_new_fields_wait_for_every_member() -> None:
    old = sent_obs({"n1": 4, "n2": 2})  # n2 runs the previous release
    assert "tpot_ms" not in old and "gpu_growth" not in old and old["ttft_ms"] == 30.0


def test_new_fields_are_sent_when_everyone_knows_them() -> None:
    new = sent_obs({"n1": 4, "n2": 4})
    assert (new["tpot_ms"], new["gpu_growth"]) == (5.0, 0.01)
