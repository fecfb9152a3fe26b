"""The bounds of a histogram-derived TTFT/TPOT (protocol 5) reach the replicated state, so the
leader's weights judge an idle replica by its bucket as its own L3 does; a protocol-4 member
would drop them, so they wait for every member (the figure then reads as measured, as before)."""

from __future__ import annotations

import asyncio

from hanode.cluster.state import apply
from hanode.cluster.view import freeze
from hanode.pool.replica import HealthLevel, Observation
from tests.unit.cluster.fake_store import FakeStore
from tests.unit.cluster.helpers import spec
from tests.unit.cluster.test_runtime import pool_doc, started

IDLE = Observation(
    level=HealthLevel.HEALTHY, ttft_ms=30.0, tpot_ms=5.0, tpot_lo_ms=0.0, tpot_hi_ms=10.0
)
BOUNDS = ("ttft_lo_ms", "ttft_hi_ms", "tpot_lo_ms", "tpot_hi_ms")


def sent(protocols: dict[str, int]) -> tuple[dict[str, object], FakeStore]:
    async def go() -> tuple[dict[str, object], FakeStore]:
        doc = pool_doc(0)
        for node, protocol in protocols.items():
            cmd = {"op": "register_node", "name": node, "raft": f"h:{node}", "ts": 1.0}
            apply(doc, {**cmd, "protocol": protocol})
        store = FakeStore(doc)
        runtime, _ = await started(store)
        apply(store.doc, {"op": "register_replica", "spec": spec("own-0", node="n1"), "ts": 1})
        runtime.reporter.observe("own-0", IDLE)
        for _ in range(10):
            await asyncio.sleep(0)
        (cmd,) = [c for c in store.submitted if c["op"] == "observe"]
        apply(store.doc, {**cmd, "ts": 2.0})
        obs: dict[str, object] = cmd["obs"]
        return obs, store

    return asyncio.run(go())


def test_bounds_wait_for_every_member_on_protocol_5() -> None:
    old, _ = sent({"n1": 5, "n2": 4})
    assert not set(BOUNDS) & set(old) and old["tpot_ms"] == 5.0


def test_bounds_are_replicated_and_read_back() -> None:
    new, store = sent({"n1": 5, "n2": 5})
    assert (new["tpot_lo_ms"], new["tpot_hi_ms"]) == (0.0, 10.0) and "ttft_lo_ms" not in new
    obs = freeze(store.doc, 1).replicas["own-0"].observation
    assert (obs.tpot_ms, obs.tpot_lo_ms, obs.tpot_hi_ms, obs.ttft_lo_ms) == (5.0, 0.0, 10.0, None)
