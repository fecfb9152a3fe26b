"""Hedged first tries through the relay, against fake replicas: after the pool's p95 time to
first byte a second try goes to the other replica; the first answer wins and the other try is
cancelled at once (its connection closed); hedges are counted against the retry budget."""

from __future__ import annotations

import asyncio

from tests.unit.router.fakes import MODEL, Rig, chat_chunk, hold, respond, rig, sse
from tests.unit.router.test_relay import WAIT, finished, run, served_by

DONE = b"data: [DONE]\n\n"


def learn(r: Rig, stream: bool = False, seconds: float = 0.05) -> None:
    """Teach the router a p95 time to first byte (as 20 answered first tries would)."""
    for _ in range(20):
        r.door.core.first_byte(MODEL, stream, seconds)


async def until(cond: object, what: str) -> None:
    """Poll a condition (bounded in time), as the router's own timers move things on."""
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT
    while not cond():  # type: ignore[operator]
        assert loop.time() < end, what
        await asyncio.sleep(0.01)


def test_off_by_default() -> None:
    async def main() -> None:
        async with rig() as r:
            learn(r)
            assert r.door.core.hedge_delay(MODEL, False) is None

    run(main)


def test_the_hedge_answers_first_and_the_first_try_is_cancelled() -> None:
    async def main() -> None:
        async with rig(hedge="unary") as r:
            learn(r)
            assert r.door.core.hedge_delay(MODEL, False) == 0.05
            r.a.script.append(hold())  # the first replica never answers
            resp = await finished(r.send())
            assert resp.status == 200 and served_by(resp) == "b"
            await asyncio.wait_for(r.a.seen[0].gone, WAIT)  # its slot is freed at once
            assert r.metric("hanode_hedges_total", model=MODEL, result="sent") == 1
            assert r.metric("hanode_hedges_total", model=MODEL, result="won") == 1
            assert r.breaker("a")["state"] == "closed"  # cancelled, not failed
            assert r.door.inflight["a"] == r.door.inflight["b"] == 0

    run(main)


def test_the_first_try_answers_first_and_the_hedge_is_cancelled() -> None:
    async def main() -> None:
        async with rig(hedge="all") as r:
            learn(r)
            r.a.script.append(hold())
            r.b.script.append(hold())
            resp = r.send()
            first = await r.a.next_call()
            hedge = await r.b.next_call()
            first.let_go()
            assert served_by(await finished(resp)) == "a"
            await asyncio.wait_for(hedge.gone, WAIT)
            assert r.metric("hanode_hedges_total", model=MODEL, result="lost") == 1
            assert r.door.inflight["a"] == r.door.inflight["b"] == 0

    run(main)


def test_a_first_try_that_fails_hands_over_to_the_waiting_hedge() -> None:
    async def main() -> None:
        async with rig(hedge="unary") as r:
            learn(r)
            r.a.script.append(hold())
            r.b.script.append(hold())
            resp = r.send()
            first = await r.a.next_call()
            hedge = await r.b.next_call()
            first.writer.transport.abort()  # the first replica dies
            await until(lambda: r.door.inflight.get("a") == 0, "the first try failed")
            hedge.let_go()
            assert served_by(await finished(resp)) == "b"
            assert len(r.a.seen) == 1 and len(r.b.seen) == 1  # no third try
            assert r.door.inflight["a"] == r.door.inflight["b"] == 0

    run(main)


def test_a_hedged_stream_is_the_winner_s_stream() -> None:
    async def main() -> None:
        async with rig(hedge="streams") as r:
            learn(r, stream=True)
            r.a.script.append(hold())
            r.b.script.append(sse([chat_chunk("B", role=True), chat_chunk("B", "hi"), DONE]))
            resp = await finished(r.send(stream=True))
            assert served_by(resp) == "b" and resp.body.endswith(DONE) and not resp.aborted
            await asyncio.wait_for(r.a.seen[0].gone, WAIT)

    run(main)


def test_hedges_spend_the_retry_budget() -> None:
    async def main() -> None:
        async with rig(hedge="unary", retry_budget_ratio=0.0, retry_budget_min_per_s=0.0) as r:
            learn(r)
            r.a.script.append(hold(respond()))
            resp = r.send()
            first = await r.a.next_call()
            await until(
                lambda: r.metric("hanode_hedges_total", model=MODEL, result="budget") == 1,
                "the hedge was refused by the budget",
            )
            first.let_go()
            assert served_by(await finished(resp)) == "a" and r.b.seen == []

    run(main)
