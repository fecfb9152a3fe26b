"""Mid-stream continuation with real engines: three upstream ``llama-server`` replicas behind a
node, greedy decoding (temperature 0), the official ``openai`` client.

The serving replica is SIGKILLed once the client has read K chunks of a 600-token stream (the
tiny model writes about 1,500 tokens a second, so the kill lands well inside the stream). The
continued ``/v1/completions`` text must equal an uninterrupted run's: llama.cpp gives each
token's id (with ``logprobs``) and takes a prompt of text and ids mixed, so the router continues
from the ids and nothing is tokenized again (this model's tokenizer would re-tokenize the text
differently, and the text would diverge). A chat stream continues from its partial message
(llama.cpp continues a final assistant message) and ends normally.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import E2EProcs, metric_sum
from tests.e2e.llamacpp_support import ALIAS, llama_server_binary
from tests.e2e.test_llamacpp import LlamaCluster, front, start_servers, tracked
from tests.support.procs import http_get

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PROMPT = "The old man and the sea"
TOKENS = 600  # per-slot context is 1024 (-c 4096, 4 slots): prompt + output fit
KILL_AFTER = 40  # chunks read before the serving replica is killed


@pytest.fixture
def procs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[E2EProcs]:
    llama_server_binary()
    with tracked(E2EProcs(tmp_path), request) as p:
        yield p


def read(c: LlamaCluster, chat: bool, kill_after: int | None) -> dict[str, Any]:
    """Stream one greedy request through hanode; SIGKILL its replica after ``kill_after``
    chunks. Returns what the client saw."""
    opts: dict[str, Any] = {
        "model": ALIAS,
        "max_tokens": TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    seen: dict[str, Any] = {"text": "", "chunks": 0, "ids": set(), "usage": None, "finish": None}
    with c.openai(timeout=60.0) as client:
        if chat:
            messages = [{"role": "user", "content": "Tell me a long story about the sea"}]
            raw = client.chat.completions.with_raw_response.create(messages=messages, **opts)
        else:
            raw = client.completions.with_raw_response.create(prompt=PROMPT, **opts)
        seen["replica"] = replica = raw.headers["x-hanode-replica"]
        for chunk in raw.parse():
            seen["ids"].add(chunk.id)
            if chunk.usage is not None:
                seen["usage"] = chunk.usage
            for choice in chunk.choices:
                piece = choice.delta.content if chat else choice.text  # type: ignore[union-attr]
                if choice.finish_reason:
                    seen["finish"] = choice.finish_reason
                if piece:
                    seen["text"] += piece
                    seen["chunks"] += 1
                    if seen["chunks"] == kill_after:
                        c.servers[c.names.index(replica)].kill(signal.SIGKILL)
    return seen


def continuations(c: LlamaCluster, replica: str) -> float:
    text = http_get(c.node.ops_url + "/metrics", timeout=5.0)[2].decode()
    return metric_sum(text, "hanode_stream_continuations_total", replica=replica)


def test_a_replica_killed_mid_stream_continued_text_equals_the_uninterrupted_run(
    procs: E2EProcs,
) -> None:
    c = front(procs, start_servers(procs, 3))
    whole = read(c, chat=False, kill_after=None)
    assert whole["chunks"] == TOKENS and whole["finish"] == "length", whole["chunks"]

    cut = read(c, chat=False, kill_after=KILL_AFTER)
    victim = cut["replica"]
    assert continuations(c, victim) == 1  # the kill landed inside the stream
    assert cut["text"] == whole["text"]  # token for token the uninterrupted answer
    assert len(cut["ids"]) == 1 and cut["chunks"] == TOKENS and cut["finish"] == "length"
    assert cut["usage"].completion_tokens == TOKENS
    assert cut["usage"].total_tokens == cut["usage"].prompt_tokens + TOKENS

    # A chat stream continues from its partial message and ends normally.
    c.wait_health({victim: "down"}, 15.0)
    chat = read(c, chat=True, kill_after=KILL_AFTER)
    assert chat["replica"] != victim
    assert continuations(c, chat["replica"]) == 1
    assert len(chat["ids"]) == 1 and chat["finish"] in ("length", "stop")
    assert chat["chunks"] > KILL_AFTER and chat["text"].strip()
    assert chat["usage"] is not None
    assert (
        chat["usage"].total_tokens == chat["usage"].prompt_tokens + chat["usage"].completion_tokens
    )
