"""The admission gate in the front door path, against fake replicas: capacity, strict priority,
bounded queues, 429/503 with Retry-After, a client leaving its queue, fallback models, the
degradation header and the router share."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import orjson

from hanode.http.request import Request
from hanode.policies.classes import RequestClass, merge_classes
from hanode.policies.degradation import DegradeConfig, Levels
from hanode.pool.replica import AdminState, HealthLevel, Observation, ReplicaSpec, Role
from hanode.pool.snapshot import ReplicaState
from hanode.router.admission_config import AdmissionConfig, ModelAdmission
from tests.unit.router.fakes import MODEL, FakeResponder, Rig, hold, rig, state
from tests.unit.router.test_relay import finished, run

CLASSES = merge_classes(
    (
        RequestClass("interactive", 0, 0.999, 5.0, 4, degrade=False, fallback=True),
        RequestClass("batch", 2, 0.95, 5.0, 2, degrade=True, fallback=False),
    )
)


def config(**kw: Any) -> AdmissionConfig:
    kw.setdefault("max_concurrency", 1)  # two replicas: capacity 2
    kw.setdefault("classes", CLASSES)
    return AdmissionConfig(**kw)


def send(r: Rig, cls: str, text: str = "hi", model: str = MODEL, **body: Any) -> FakeResponder:
    payload = orjson.dumps(
        {"model": model, "messages": [{"role": "user", "content": text}], **body}
    )
    request = Request(
        b"POST",
        b"/v1/chat/completions",
        {b"content-type": b"application/json", b"x-hanode-class": cls.encode()},
        payload,
        True,
        None,
    )
    responder = FakeResponder()
    r.door.handle(request, responder.as_responder)
    return responder


def error(responder: FakeResponder) -> dict[str, Any]:
    err: dict[str, Any] = orjson.loads(responder.body)["error"]
    return err


def gate_of(r: Rig) -> Any:
    return r.door.core.admission.gate(MODEL)


def test_beyond_capacity_requests_wait_and_go_strictly_by_priority() -> None:
    async def main() -> None:
        async with rig(admission=config()) as r:
            r.a.default = r.b.default = hold()
            first = [send(r, "batch", "b1"), send(r, "interactive", "i1")]
            calls = [await r.a.next_call(), await r.a.next_call()]
            queued_batch = send(r, "batch", "b2")
            queued_inter = send(r, "interactive", "i2")
            mg = gate_of(r)
            assert mg.in_service == 2 and len(mg.queues) == 2
            calls[0].let_go()
            await finished(first[0])
            nxt = await r.a.next_call()
            assert b"i2" in nxt.body  # the interactive one passed the batch one queued earlier
            nxt.let_go()
            await finished(queued_inter)
            last = await r.a.next_call()
            assert b"b2" in last.body
            last.let_go()
            calls[1].let_go()
            await finished(queued_batch)
            assert queued_batch.status == 200 and queued_inter.status == 200

    run(main)


def test_a_full_queue_and_a_wait_past_the_timeout_get_429_with_retry_after() -> None:
    classes = dict(CLASSES)
    classes["batch"] = dataclasses.replace(classes["batch"], queue_timeout_s=0.1)

    async def main() -> None:
        async with rig(admission=config(classes=classes)) as r:
            r.a.default = r.b.default = hold()
            held = [send(r, "interactive"), send(r, "interactive")]
            calls = [await r.a.next_call(), await r.a.next_call()]
            waiting = [send(r, "batch"), send(r, "batch")]
            full = send(r, "batch")  # max_queue 2
            await finished(full)
            assert full.status == 429 and full.header(b"retry-after") is not None
            assert error(full)["type"] == "rate_limit_error"
            assert "full" in error(full)["message"]
            for w in waiting:
                await finished(w)
                assert w.status == 429 and int(w.header(b"retry-after") or 0) >= 1
                assert "queue_timeout_s" in error(w)["message"]
            assert gate_of(r).queues.max_seen["batch"] == 2  # never past its bound
            for c in calls:
                c.let_go()
            for h in held:
                await finished(h)
            assert (
                r.metric(
                    "hanode_admission_total", model=MODEL, **{"class": "batch"}, outcome="timeout"
                )
                == 2
            )

    run(main)


def test_a_client_that_leaves_its_queue_frees_its_place_at_once() -> None:
    async def main() -> None:
        async with rig(admission=config()) as r:
            r.a.default = r.b.default = hold()
            held = [send(r, "interactive"), send(r, "interactive")]
            calls = [await r.a.next_call(), await r.a.next_call()]
            gone = send(r, "batch", "gone")
            mg = gate_of(r)
            assert mg.queues.length("batch") == 1
            gone.client_leaves()
            assert mg.queues.length("batch") == 0
            calls[0].let_go()
            await finished(held[0])
            await asyncio.sleep(0.05)
            assert all(b"gone" not in c.body for c in r.a.seen + r.b.seen)
            calls[1].let_go()
            await finished(held[1])

    run(main)


def _small(port: int) -> ReplicaState:
    spec = ReplicaSpec("s", "small", f"http://127.0.0.1:{port}", engine="vllm")
    obs = Observation(level=HealthLevel.HEALTHY)
    return ReplicaState(spec, Role.ACTIVE, AdminState.ENABLED, obs, 1.0)


def test_primary_gone_fallback_class_moves_the_other_gets_503() -> None:
    models = {MODEL: ModelAdmission(fallback=("small",))}

    async def main() -> None:
        async with rig(admission=config(models=models)) as r:
            down = HealthLevel.DOWN
            r.view.publish(
                state("a", r.a.port, level=down), state("b", r.b.port, level=down), _small(r.a.port)
            )
            moved = send(r, "interactive", "fb")
            call = await r.a.next_call()
            assert orjson.loads(call.body)["model"] == "small"
            await finished(moved)
            assert moved.status == 200
            assert moved.header(b"x-hanode-degraded") == b"fallback"
            refused = send(r, "batch")
            await finished(refused)
            assert refused.status == 503 and refused.header(b"retry-after") is not None
            assert error(refused)["type"] == "server_error"

    run(main)


def test_degradation_engages_under_pressure_and_releases_after() -> None:
    degrade = DegradeConfig(
        max_tokens=64,
        temperature=0.2,
        levels={
            "max_tokens": Levels(1.5, 1.0),
            "temperature": Levels(1.5, 1.0),
            "prompt": Levels(9, 8),
        },
    )
    models = {MODEL: ModelAdmission(degrade=degrade)}

    async def main() -> None:
        async with rig(admission=config(models=models)) as r:
            r.a.default = r.b.default = hold()
            held = [send(r, "interactive"), send(r, "interactive")]
            calls = [await r.a.next_call(), await r.a.next_call()]
            early = send(r, "batch", max_tokens=1000)  # pressure 2/2 when it came: as asked
            mg = gate_of(r)
            assert mg.degrade.engaged == {"max_tokens", "temperature"}  # 3/2 now
            queued = send(r, "batch", max_tokens=1000, temperature=1.0)
            calls[0].let_go()
            await finished(held[0])
            first = await r.a.next_call()
            assert orjson.loads(first.body)["max_tokens"] == 1000
            first.let_go()
            await finished(early)
            assert early.header(b"x-hanode-degraded") is None
            nxt = await r.a.next_call()
            sent = orjson.loads(nxt.body)
            assert sent["max_tokens"] < 1000 and sent["temperature"] == 0.2
            nxt.let_go()
            await finished(queued)
            assert queued.header(b"x-hanode-degraded") == b"max_tokens,temperature"
            calls[1].let_go()
            await finished(held[1])
            assert mg.degrade.engaged == set()  # pressure 0 now
            plain = send(r, "batch", max_tokens=1000)
            (await r.a.next_call()).let_go()
            await finished(plain)
            assert plain.header(b"x-hanode-degraded") is None
            assert (
                r.metric(
                    "hanode_degradation_changes_total",
                    model=MODEL,
                    policy="max_tokens",
                    state="released",
                )
                == 1
            )
            assert r.metric("hanode_degraded_requests_total", model=MODEL, policy="max_tokens") == 1

    run(main)


def test_three_routers_each_take_a_third() -> None:
    async def main() -> None:
        async with rig(admission=config(max_concurrency=3)) as r:
            gate = r.door.core.admission
            assert gate.share(gate.gate(MODEL)) == 6
            gate.set_routers(3)
            assert gate.share(gate.gate(MODEL)) == 2

    run(main)


def test_a_class_burning_its_budget_fast_may_hold_the_whole_share() -> None:
    classes = dict(CLASSES)
    classes["batch"] = dataclasses.replace(classes["batch"], capacity_share=0.5)

    async def main() -> None:
        async with rig(admission=config(classes=classes)) as r:
            r.a.default = r.b.default = hold()
            gate = r.door.core.admission
            first = send(r, "batch", "b1")
            call1 = await r.a.next_call()
            second = send(r, "batch", "b2")  # its capacity_share (1 of 2) is taken: waits
            assert gate_of(r).queues.length("batch") == 1
            # batch has failed every request of the last hour: 20x its 5 % budget
            for _ in range(50):
                gate.record(MODEL, classes["batch"], 503, False, 0.0)
            gate.refresh_burning(r.door.loop.time())
            assert (MODEL, "batch") in gate.burning
            gate.pool_changed()  # wakes the queue: the burning class may take the free place
            call2 = await r.a.next_call()
            assert b"b2" in call2.body
            call1.let_go()
            call2.let_go()
            await finished(first)
            await finished(second)

    run(main)
