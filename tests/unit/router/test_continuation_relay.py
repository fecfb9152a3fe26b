"""The relay's continuation glue against fake replicas: a stream broken after its first byte
(reset, stall, error event) is continued on the other replica into the same client stream:
one id, one role delta, indexes that go on, usage that adds up, one [DONE]; refusals end with
an OpenAI-shaped error event and never [DONE]."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from hanode.http.request import Request
from hanode.policies.breaker import BreakerConfig
from hanode.pool.replica import ReplicaSpec
from hanode.pool.snapshot import ReplicaState
from tests.unit.router.fakes import (
    MODEL,
    FakeResponder,
    Rig,
    chat_chunk,
    reset,
    rig,
    sse,
    state,
    text_chunk,
    usage_chunk,
)
from tests.unit.router.test_relay import finished, run

WAIT = 5.0
DONE = b"data: [DONE]\n\n"


def send(r: Rig, body: dict[str, Any], chat: bool = True) -> FakeResponder:
    path = b"/v1/chat/completions" if chat else b"/v1/completions"
    doc = {"model": MODEL, "stream": True, **body}
    if chat and "messages" not in doc:
        doc["messages"] = [{"role": "user", "content": "hi"}]
    request = Request(
        b"POST", path, {b"content-type": b"application/json"}, orjson.dumps(doc), True, None
    )
    responder = FakeResponder()
    r.door.handle(request, responder.as_responder)
    return responder


def events(body: bytes) -> list[Any]:
    """The data of every event ("[DONE]" as a string), comments left out."""
    out: list[Any] = []
    for event in body.split(b"\n\n"):
        event = event.strip(b"\n")
        if event.startswith(b"data: "):
            data = event[6:]
            out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


def content(evs: list[Any]) -> str:
    out = ""
    for e in evs:
        if isinstance(e, dict):
            for c in e.get("choices", []):
                out += c.get("delta", {}).get("content") or c.get("text") or ""
    return out


def first_part(rid: str = "A") -> list[bytes]:
    return [chat_chunk(rid, role=True), chat_chunk(rid, "w0"), chat_chunk(rid, " w1"),
            chat_chunk(rid, " w2")]  # fmt: skip


def rest_part(rid: str = "B", prompt: int = 9, completion: int = 2) -> list[bytes]:
    return [
        chat_chunk(rid, role=True),
        chat_chunk(rid, " w3"),
        chat_chunk(rid, " w4"),
        chat_chunk(rid, "", finish="length"),
        usage_chunk(rid, prompt, completion),
        DONE,
    ]


def test_reset_after_the_first_byte_is_continued_on_the_other_replica() -> None:
    async def main() -> None:
        async with rig(pin_seeds=True) as r:
            r.a.script.append(sse(first_part(), then="reset"))
            r.b.script.append(sse(rest_part()))
            resp = await finished(
                send(r, {"max_tokens": 5, "stream_options": {"include_usage": True}})
            )
            assert not resp.aborted and resp.status == 200
            evs = events(resp.body)
            assert content(evs) == "w0 w1 w2 w3 w4"
            assert {e["id"] for e in evs if isinstance(e, dict)} == {"A"}  # one response id
            roles = [e for e in evs if isinstance(e, dict) and e["choices"]
                     and "role" in e["choices"][0]["delta"]]  # fmt: skip
            assert len(roles) == 1
            assert evs.count("[DONE]") == 1 and evs[-1] == "[DONE]"
            assert resp.body.endswith(b": hanode-continued 1\n\n" + DONE)
            # Usage adds up: b's prompt held the 3 emitted tokens, which are completions.
            usage = [e["usage"] for e in evs if isinstance(e, dict) and e.get("usage")]
            assert usage == [{"prompt_tokens": 6, "completion_tokens": 5, "total_tokens": 11}]
            # The continuation request: the partial answer continued, the budget left, the seed.
            first = orjson.loads(r.a.seen[0].body)
            cont = orjson.loads(r.b.seen[0].body)
            assert cont["messages"][-1] == {"role": "assistant", "content": "w0 w1 w2"}
            assert cont["messages"][:-1] == first["messages"]
            assert cont["continue_final_message"] is True
            assert cont["add_generation_prompt"] is False
            assert cont["max_tokens"] == 2
            assert cont["seed"] == first["seed"] and isinstance(first["seed"], int)
            m = "hanode_stream_continuations_total"
            assert r.metric(m, model=MODEL, replica="a", reason="connection") == 1
            assert r.metric("hanode_streams_continued_total", model=MODEL, result="complete") == 1
            assert r.door.inflight["a"] == r.door.inflight["b"] == 0

    run(main)


def test_stall_is_continued_and_the_stalled_try_abandoned() -> None:
    async def main() -> None:
        async with rig(stream_idle_timeout_s=0.2, breaker=BreakerConfig(timeout_trip_count=1)) as r:
            r.a.script.append(sse(first_part(), then="stall"))
            r.b.script.append(sse(rest_part()))
            resp = await finished(send(r, {"max_tokens": 5}))
            assert not resp.aborted
            assert content(events(resp.body)) == "w0 w1 w2 w3 w4"
            await asyncio.wait_for(r.a.seen[0].gone, WAIT)  # the engine can free the slot
            assert r.breaker("a")["state"] == "open"
            m = "hanode_stream_continuations_total"
            assert r.metric(m, model=MODEL, replica="a", reason="stream_stall") == 1

    run(main)


def test_engine_error_event_is_continued_and_never_reaches_the_client() -> None:
    async def main() -> None:
        async with rig() as r:
            error = b'data: {"error": {"message": "engine died", "type": "server_error"}}\n\n'
            r.a.script.append(sse([*first_part(), error]))
            r.b.script.append(sse(rest_part()))
            resp = await finished(send(r, {"max_tokens": 5}))
            assert not resp.aborted and b"engine died" not in resp.body
            assert content(events(resp.body)) == "w0 w1 w2 w3 w4"
            m = "hanode_stream_continuations_total"
            assert r.metric(m, model=MODEL, replica="a", reason="error_event") == 1

    run(main)


def test_a_half_sent_event_is_held_back_and_the_rest_continued() -> None:
    async def main() -> None:
        async with rig() as r:
            r.a.script.append(sse(first_part(), then="reset", split=20))
            r.b.script.append(sse([chat_chunk("B", role=True), chat_chunk("B", " w2"),
                                   *rest_part()[1:]]))  # fmt: skip
            resp = await finished(send(r, {"max_tokens": 5}))
            evs = events(resp.body)  # every event the client got parses
            assert content(evs) == "w0 w1 w2 w3 w4"
            cont = orjson.loads(r.b.seen[0].body)
            assert cont["messages"][-1]["content"] == "w0 w1" and cont["max_tokens"] == 3

    run(main)


def test_completions_continue_from_prompt_plus_emitted_text() -> None:
    async def main() -> None:
        async with rig() as r:
            r.a.script.append(sse([text_chunk("A", " a"), text_chunk("A", " b")], then="reset"))
            r.b.script.append(sse([text_chunk("B", " c"), text_chunk("B", "", finish="length"),
                                   DONE]))  # fmt: skip
            resp = await finished(send(r, {"prompt": "say"}, chat=False))
            assert content(events(resp.body)) == " a b c"
            cont = orjson.loads(r.b.seen[0].body)
            # No max_tokens: OpenAI's /v1/completions default of 16, less the 2 emitted.
            assert cont["prompt"] == "say a b" and cont["max_tokens"] == 14
            assert "continue_final_message" not in cont

    run(main)


def test_only_the_end_missing_needs_no_other_replica() -> None:
    async def main() -> None:
        async with rig() as r:
            done = [*first_part(), chat_chunk("A", "", finish="stop")]
            r.a.script.append(sse(done, then="reset"))
            resp = await finished(send(r, {"max_tokens": 5}))
            assert not resp.aborted and r.b.seen == []
            evs = events(resp.body)
            assert content(evs) == "w0 w1 w2" and evs.count("[DONE]") == 1
            success = "hanode_request_success_total"
            assert r.metric(success, model=MODEL, replica="a", kind="functional") == 1
            assert r.door.inflight["a"] == 0

    run(main)


def refused(resp: FakeResponder) -> dict[str, Any]:
    """The stream ended with an error event, never [DONE]."""
    assert resp.aborted and resp.status == 200
    assert b"[DONE]" not in resp.body
    last = events(resp.body)[-1]
    assert set(last) == {"error"} and last["error"]["type"] == "server_error"
    return dict(last["error"])


def test_refusals_end_with_an_error_event() -> None:
    cases: list[tuple[dict[str, Any], list[bytes], str]] = [
        ({"n": 2}, first_part(), "more than one choice"),
        ({}, [*first_part(), chat_chunk("A", tool_call=True)], "tool calls"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         first_part(), "structured output"),
        ({"guided_json": {"type": "object"}}, first_part(), "structured output"),
    ]  # fmt: skip

    async def main() -> None:
        for body, sent, why in cases:
            async with rig() as r:
                r.a.script.append(sse(sent, then="reset"))
                err = refused(await finished(send(r, body)))
                assert why in err["message"] and err["code"] == "stream_not_continued"
                assert r.b.seen == []

    run(main)


def test_the_continuation_limit_ends_the_stream_with_an_error_event() -> None:
    async def main() -> None:
        async with rig(stream_continuation_limit=1) as r:
            r.a.script.append(sse(first_part(), then="reset"))
            r.b.script.append(sse([chat_chunk("B", role=True), chat_chunk("B", " w3")],
                                  then="reset"))  # fmt: skip
            err = refused(await finished(send(r, {"max_tokens": 9})))
            assert "continued 1 times" in err["message"]
            assert "stream_continuation_limit = 1" in err["message"]
            assert len(r.b.seen) == 1
            m = "hanode_stream_continuation_refused_total"
            assert r.metric(m, model=MODEL, reason="limit") == 1
            assert r.metric("hanode_streams_continued_total", model=MODEL, result="cut") == 1

    run(main)


def test_a_continuation_nobody_takes_ends_with_an_error_event() -> None:
    async def main() -> None:
        async with rig(retry_budget_ratio=0.0, retry_budget_min_per_s=0.0) as r:
            r.a.script.append(sse(first_part(), then="reset"))
            r.a.default = reset()  # a takes no continuation; b refuses connections
            r.b.stop_listening()
            err = refused(await finished(send(r, {"max_tokens": 9})))
            assert "could not be continued" in err["message"]
            assert r.b.seen == []

    run(main)


def test_continuation_off_cuts_with_an_error_event() -> None:
    async def main() -> None:
        async with rig(stream_continuation=False) as r:
            r.a.script.append(sse(first_part(), then="reset"))
            err = refused(await finished(send(r, {"max_tokens": 9})))
            assert "stream_continuation" in err["message"] and r.b.seen == []

    run(main)


def test_a_chat_is_not_continued_on_an_engine_that_cannot() -> None:
    async def main() -> None:
        async with rig() as r:
            a = state("a", r.a.port)
            b_spec = state("b", r.b.port)
            tgi = ReplicaState(
                ReplicaSpec("b", MODEL, f"http://127.0.0.1:{r.b.port}", engine="tgi"),
                b_spec.role,
                b_spec.admin,
                b_spec.observation,
                b_spec.weight,
            )
            r.view.publish(a, tgi)
            r.a.script.append(sse(first_part(), then="reset"))
            r.a.default = reset()
            err = refused(await finished(send(r, {"max_tokens": 9})))
            assert "engine 'tgi' cannot continue" in err["message"] and r.b.seen == []
            m = "hanode_stream_continuation_refused_total"
            assert r.metric(m, model=MODEL, reason="engine") == 1

    run(main)
