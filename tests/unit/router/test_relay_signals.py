"""What a relayed answer tells passive health: TTFT only from streams (the first output, not the
head), TPOT from usage.completion_tokens or counted events, and an unusable 2xx as a failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
import pytest

from hanode.router.outcome import StreamInspector
from tests.unit.router.fakes import FakeResponder, hold, respond, rig, stream_then_hold

WAIT = 5.0


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30.0))


async def finished(responder: FakeResponder) -> FakeResponder:
    return await asyncio.wait_for(asyncio.shield(responder.finished), WAIT)


def answer(content: str, completion_tokens: int | None) -> bytes:
    doc: dict[str, object] = {
        "object": "chat.completion",
        "choices": [{"message": {"content": content}, "index": 0}],
    }
    if completion_tokens is not None:
        doc["usage"] = {"prompt_tokens": 3, "completion_tokens": completion_tokens}
    return orjson.dumps(doc)


def test_whole_answer_has_tpot_from_usage_and_no_ttft() -> None:
    async def main() -> None:
        async with rig() as r:
            r.a.script.append(hold(respond(body=answer("a long answer", 200))))
            resp = r.send()
            call = await r.a.next_call()
            await asyncio.sleep(0.2)  # the answer takes its time (no timer is raced)
            call.release.set_result(None)
            assert (await finished(resp)).status == 200
            (sample,) = r.observer.of("a", ok=True)
            assert sample.ttft_s is None
            assert sample.tpot_s is not None
            assert sample.tpot_s * 200 == pytest.approx(sample.latency_s)
            assert sample.latency_s >= 0.2

    run(main)


def test_empty_200_is_a_functional_failure_for_passive_health() -> None:
    async def main() -> None:
        async with rig() as r:
            r.a.script.append(respond(body=answer("", 0)))
            resp = await finished(r.send())
            assert resp.status == 200  # the client gets what the replica said...
            assert r.observer.of("a", ok=True) == []
            assert len(r.observer.of("a", ok=False)) == 1  # ...and health hears a failure

    run(main)


def test_unparseable_200_is_a_functional_failure() -> None:
    async def main() -> None:
        async with rig() as r:
            r.a.script.append(respond(body=b"<html>gateway says hi</html>"))
            await finished(r.send())
            assert len(r.observer.of("a", ok=False)) == 1

    run(main)


def test_stream_ttft_is_the_first_output_not_the_head() -> None:
    async def main() -> None:
        async with rig() as r:
            r.a.script.append(stream_then_hold())
            resp = r.send(stream=True)
            call = await r.a.next_call()
            await asyncio.sleep(0.2)
            call.release.set_result(None)
            await finished(resp)
            (sample,) = r.observer.of("a", ok=True)
            assert sample.ttft_s is not None and sample.ttft_s < sample.latency_s
            # two token events after the first output: TPOT is the rest over one more token
            assert sample.tpot_s is not None
            assert sample.tpot_s >= 0.2 - 1e-3

    run(main)


def test_inspector_reads_usage_split_across_reads() -> None:
    body = answer("hi", 12345)
    for cut in range(1, len(body)):
        inspector = StreamInspector()
        inspector.feed(body[:cut])
        inspector.feed(body[cut:])
        assert inspector.output_tokens(stream=False) == 12345, cut
        assert inspector.has_output


def test_inspector_counts_stream_events() -> None:
    times = iter([7.0])
    inspector = StreamInspector(lambda: next(times))
    events = b"".join(b'data: {"choices":[{"text":"t%d"}]}\n\n' % i for i in range(5))
    for i in range(0, len(events), 7):  # small reads: events split everywhere
        inspector.feed(events[i : i + 7])
    inspector.feed(b"data: [DONE]\n\n")
    assert inspector.output_tokens(stream=True) == 5
    assert inspector.first_output_at == 7.0
    assert inspector.output_tokens(stream=False) is None
