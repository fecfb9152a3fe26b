"""The official ``openai`` client against a real front door (hanode's HTTP server on
loopback) in front of fake replicas: a continued stream reads as one clean stream, and every
refusal case makes the client raise (an error event), never end quietly at [DONE]."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from hanode.http.server import HttpServer
from tests.unit.router.fakes import MODEL, Rig, chat_chunk, rig, sse
from tests.unit.router.test_continuation_relay import first_part, rest_part
from tests.unit.router.test_relay import run


async def serve(r: Rig) -> tuple[HttpServer, str]:
    server = HttpServer(r.door.handle)
    host, port = await server.listen("127.0.0.1", 0)
    return server, f"http://{host}:{port}/v1"


def stream_all(base_url: str, **kw: Any) -> list[Any]:
    with openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=10.0) as client:
        messages = [{"role": "user", "content": "hi"}]
        stream = client.chat.completions.create(model=MODEL, messages=messages, stream=True, **kw)
        return list(stream)


def test_the_client_reads_a_continued_stream_as_one() -> None:
    async def main() -> None:
        async with rig() as r:
            server, url = await serve(r)
            try:
                r.a.script.append(sse(first_part(), then="reset"))
                r.b.script.append(sse(rest_part()))
                chunks = await asyncio.to_thread(
                    stream_all, url, max_tokens=5, stream_options={"include_usage": True}
                )
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                assert text == "w0 w1 w2 w3 w4"
                assert {c.id for c in chunks} == {"A"}
                assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
            finally:
                await server.close()

    run(main)


REFUSALS: list[tuple[dict[str, Any], list[bytes], str]] = [
    ({"n": 2}, first_part(), "more than one choice"),
    ({}, [*first_part(), chat_chunk("A", tool_call=True)], "tool calls"),
    ({"response_format": {"type": "json_object"}}, first_part(), "structured output"),
    ({"extra_body": {"guided_json": {"type": "object"}}}, first_part(), "structured output"),
]


@pytest.mark.parametrize(("kw", "sent", "why"), REFUSALS)
def test_each_refusal_makes_the_client_raise(
    kw: dict[str, Any], sent: list[bytes], why: str
) -> None:
    async def main() -> None:
        async with rig() as r:
            server, url = await serve(r)
            try:
                r.a.script.append(sse(sent, then="reset"))
                with pytest.raises(openai.APIError, match=why):
                    await asyncio.to_thread(stream_all, url, max_tokens=9, **kw)
                assert r.b.seen == []
            finally:
                await server.close()

    run(main)


def test_the_limit_makes_the_client_raise() -> None:
    async def main() -> None:
        async with rig(stream_continuation_limit=1) as r:
            server, url = await serve(r)
            try:
                r.a.script.append(sse(first_part(), then="reset"))
                r.b.script.append(sse([chat_chunk("B", " w3")], then="reset"))
                with pytest.raises(openai.APIError, match="stream_continuation_limit = 1"):
                    await asyncio.to_thread(stream_all, url, max_tokens=9)
            finally:
                await server.close()

    run(main)
