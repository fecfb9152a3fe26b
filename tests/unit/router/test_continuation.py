"""StreamFollower (pure): what the client got, when a stream may be continued, the
continuation request per engine, and the rewrite of the continuation's events."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.router.continuation import MAX_EVENT_BYTES, MAX_UNREAD_BYTES, StreamFollower
from tests.unit.router.fakes import chat_chunk, text_chunk, usage_chunk

DONE = b"data: [DONE]\n\n"


def evs(data: bytes) -> list[Any]:
    out: list[Any] = []
    for event in data.split(b"\n\n"):
        if event.startswith(b"data: "):
            body = event[6:]
            out.append("[DONE]" if body == b"[DONE]" else orjson.loads(body))
    return out


def llama_chunk(rid: str, text: str, tid: int | None, finish: str | None = None) -> bytes:
    """llama.cpp's /v1/completions event with logprobs (which carry the token id)."""
    logprobs = None
    if tid is not None:
        logprobs = {"content": [{"id": tid, "token": text, "logprob": -0.1, "top_logprobs": []}]}
    choice = {"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish}
    doc = {"choices": [choice], "created": 5, "model": "m", "object": "text_completion", "id": rid}
    return b"data: %s\n\n" % orjson.dumps(doc)


STREAM = [chat_chunk("A", role=True), chat_chunk("A", "one"), chat_chunk("A", " two"),
          chat_chunk("A", " three", finish="stop"), usage_chunk("A", 4, 3), DONE]  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(cuts=st.lists(st.integers(0, len(b"".join(STREAM))), max_size=12))
def test_output_is_the_same_however_the_bytes_are_split(cuts: list[int]) -> None:
    """Whole events only, in order, whatever the upstream reads were; nothing is lost."""
    data = b"".join(STREAM)
    bounds = sorted({0, len(data), *cuts})
    follow = StreamFollower({"messages": []}, chat=True)
    follow.request("vllm")
    out = b"".join(follow.feed(data[a:b]) for a, b in itertools.pairwise(bounds))
    assert out == data
    follow.sync()  # the hot path reads what it relayed only when asked (or on a break)
    assert follow.done and follow.finished and follow.tokens == 3
    assert "".join(follow.text) == "one two three" and follow.id == "A"


def test_a_chat_continuation_is_rewritten_into_the_first_stream() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "seed": 3}
    follow = StreamFollower(body, chat=True)
    follow.request("vllm")
    follow.feed(b"".join(STREAM[:3]))
    assert follow.refusal(limit=2) is None
    follow.continued = 1
    cont = orjson.loads(follow.request("sglang"))
    assert cont["messages"][-1] == {"role": "assistant", "content": "one two"}
    assert cont["continue_final_message"] is True and cont["add_generation_prompt"] is False
    assert cont["max_tokens"] == 4 and cont["seed"] == 3
    out = evs(follow.feed(b"".join([chat_chunk("B", role=True), chat_chunk("B", " three"),
                                    chat_chunk("B", "", finish="length"), usage_chunk("B", 12, 1),
                                    DONE])))  # fmt: skip
    chunks = [e for e in out if isinstance(e, dict)]
    assert {(e["id"], e["created"], e["model"]) for e in chunks} == {("A", 7, "m")}
    assert not any("role" in c["delta"] for e in chunks for c in e["choices"])
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    assert out[-1] == "[DONE]" and out.count("[DONE]") == 1


def test_llamacpp_completions_continue_from_token_ids_and_hide_injected_logprobs() -> None:
    follow = StreamFollower({"prompt": "The sea", "max_tokens": 5}, chat=False)
    first = orjson.loads(follow.request("llamacpp"))
    assert first["logprobs"] == 1  # asked for, for the ids
    out = evs(follow.feed(llama_chunk("A", " horse", 645) + llama_chunk("A", " said", 400)))
    assert [e["choices"][0]["logprobs"] for e in out] == [None, None]  # never shown
    assert follow.token_ids == [645, 400] and follow.tokens == 2
    follow.continued = 1
    cont = orjson.loads(follow.request("llamacpp"))
    assert cont["prompt"] == ["The sea", 645, 400] and cont["max_tokens"] == 3


def test_llamacpp_logprobs_the_client_asked_for_are_kept() -> None:
    follow = StreamFollower({"prompt": [1, 2], "logprobs": 2}, chat=False)
    assert orjson.loads(follow.request("llamacpp"))["logprobs"] == 2
    out = evs(follow.feed(llama_chunk("A", "x", 9)))
    assert out[0]["choices"][0]["logprobs"]["content"][0]["id"] == 9
    follow.continued = 1
    assert follow.refusal(limit=2, engine="llamacpp") is None
    assert orjson.loads(follow.request("llamacpp"))["prompt"] == [1, 2, 9]


def test_token_prompt_without_ids_is_refused() -> None:
    follow = StreamFollower({"prompt": [1, 2]}, chat=False)
    follow.request("vllm")
    follow.feed(text_chunk("A", "x"))
    assert follow.token_ids is None
    assert "token ids are unknown" in (follow.refusal(limit=2) or "")


def test_llamacpp_chat_echo_of_the_prefill_is_stripped() -> None:
    follow = StreamFollower({"messages": [{"role": "user", "content": "hi"}]}, chat=True)
    follow.request("llamacpp")
    follow.feed(chat_chunk("A", role=True) + chat_chunk("A", "h9") + chat_chunk("A", "Ah9"))
    follow.continued = 1
    follow.request("llamacpp")
    out = evs(follow.feed(chat_chunk("B", role=True) + chat_chunk("B", "h9Ah9 such")
                          + chat_chunk("B", " try", finish="length") + DONE))  # fmt: skip
    text = "".join(c["delta"].get("content") or "" for e in out if isinstance(e, dict)
                   for c in e["choices"])  # fmt: skip
    assert text == " such try"


def test_engines_that_cannot_continue_a_chat_are_refused() -> None:
    follow = StreamFollower({"messages": []}, chat=True)
    assert "cannot continue" in (follow.refusal(limit=2, engine="tgi") or "")
    assert follow.refusal(limit=2, engine="vllm") is None


def test_refusals() -> None:
    def why(body: dict[str, Any], extra: bytes = b"", limit: int = 2) -> str:
        follow = StreamFollower({"messages": [], **body}, chat=True)
        follow.request("vllm")
        follow.feed(chat_chunk("A", "x") + extra)
        return follow.refusal(limit) or ""

    assert why({}) == ""
    assert "more than one choice" in why({"n": 3})
    assert "more than one choice" in why({}, chat_chunk("A", "y", index=1))
    assert "tool calls" in why({}, chat_chunk("A", tool_call=True))
    assert "structured" in why({"response_format": {"type": "json_object"}})
    assert why({"response_format": {"type": "text"}}) == ""
    assert "structured" in why({"guided_regex": "a+"})
    assert "continued 0 times" in why({}, limit=0)


def test_an_error_event_marks_the_try_broken_and_stops_the_output() -> None:
    follow = StreamFollower({"messages": []}, chat=True)
    follow.request("vllm")
    err = b'data: {"object": "error", "message": "boom", "code": 500}\n\n'
    out = follow.feed(chat_chunk("A", "x") + err + chat_chunk("A", "y"))
    assert follow.broken and follow.error == "boom"
    assert evs(out) == evs(chat_chunk("A", "x"))


def test_closing_a_stream_whose_text_is_complete() -> None:
    follow = StreamFollower({"messages": [], "max_tokens": 2}, chat=True)
    follow.request("vllm")
    follow.feed(chat_chunk("A", "a") + chat_chunk("A", " b"))
    assert follow.ended_in_full()
    follow.continued = 1
    out = follow.closing()
    assert out.endswith(b": hanode-continued 1\n\n" + DONE)
    assert evs(out)[0]["choices"][0]["finish_reason"] == "length"


def test_crlf_events_are_split_too() -> None:
    follow = StreamFollower({"messages": []}, chat=True)
    follow.request("vllm")
    data = chat_chunk("A", "x").replace(b"\n", b"\r\n") + b"data: [DONE]\r\n\r\n"
    out = follow.feed(data[:7]) + follow.feed(data[7:])
    assert evs(out) == [*evs(chat_chunk("A", "x")), "[DONE]"] and follow.done


def test_an_oversized_event_is_relayed_unfollowed_and_never_continued() -> None:
    follow = StreamFollower({"messages": []}, chat=True)
    follow.request("vllm")
    big = b"data: " + b"x" * (MAX_EVENT_BYTES + 1)
    assert follow.feed(big) == big and follow.opaque
    assert follow.feed(b"rest\n\n") == b"rest\n\n"
    assert "larger than" in (follow.refusal(limit=2) or "")


def test_a_long_stream_is_read_in_batches_on_the_hot_path() -> None:
    follow = StreamFollower({"messages": []}, chat=True)
    follow.request("vllm")
    event = chat_chunk("A", " w")
    n = MAX_UNREAD_BYTES // len(event) + 2
    for _ in range(n):
        assert follow.feed(event) == event
    assert len(follow.text) >= n - 1  # read already, without asking: memory stays bounded
    assert follow.refusal(limit=2) is None and follow.tokens == n


def test_text_that_says_error_stays_on_the_hot_path_an_error_event_does_not() -> None:
    """Only a quoted "error" (a key, or vLLM's "object": "error") sends events to be read at
    once; generated text about errors is relayed unread like any other."""
    follow = StreamFollower({"messages": []}, chat=True)
    follow.request("vllm")
    text = chat_chunk("A", 'an "error": no, an error') + chat_chunk("A", " error")
    assert follow.feed(text) == text
    assert follow._raw and not follow.broken  # kept unread: no JSON parsed for it
    follow.sync()
    assert "".join(follow.text) == 'an "error": no, an error error'
    for err in (
        b'data: {"error": {"message": "boom", "code": 500}}\n\n',
        b'data: {"object": "error", "message": "boom", "code": 500}\n\n',
    ):
        follow = StreamFollower({"messages": []}, chat=True)
        follow.request("vllm")
        assert follow.feed(chat_chunk("A", "x") + err) == chat_chunk("A", "x")
        assert follow.broken and follow.error == "boom"


def test_a_first_try_sends_the_clients_bytes_unless_something_is_added() -> None:
    """No re-encoding per request: the front door's bytes go as they are, except where the
    follower must ask for more (llama.cpp's token ids) or after a break."""
    raw = b'{"messages": [], "seed": 7, "stream": true}'
    follow = StreamFollower({"messages": [], "seed": 7, "stream": True}, chat=True)
    assert follow.request("vllm", raw) is raw
    text = StreamFollower({"prompt": "a", "stream": True}, chat=False)
    assert orjson.loads(text.request("llamacpp", b'{"prompt": "a"}'))["logprobs"] == 1
    follow.feed(chat_chunk("A", role=True) + chat_chunk("A", "x"))
    follow.continued = 1
    again = orjson.loads(follow.request("vllm", raw))
    assert again["messages"][-1] == {"role": "assistant", "content": "x"}
