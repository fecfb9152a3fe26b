"""Front-door request validation: clear 4xx for bad input, before any replica is involved."""

from __future__ import annotations

import orjson
import pytest

from hanode.router.validation import RequestError, RequestLimits, parse_inference_request

LIMITS = RequestLimits(max_tokens=1000, max_n=4, max_json_depth=8)


def _err(raw: bytes, chat: bool = True) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_inference_request(raw, chat, LIMITS)
    return info.value


def test_good_chat_and_completion() -> None:
    chat = parse_inference_request(
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}', True, LIMITS
    )
    assert chat.model == "m" and chat.stream
    comp = parse_inference_request(b'{"model":"m","prompt":"hi","max_tokens":5}', False, LIMITS)
    assert comp.model == "m" and not comp.stream
    tokens = parse_inference_request(b'{"model":"m","prompt":[1,2,3]}', False, LIMITS)
    assert tokens.body["prompt"] == [1, 2, 3]


@pytest.mark.parametrize(
    ("raw", "chat", "param", "needle"),
    [
        (b"", True, None, "empty"),
        (b"{not json", True, None, "not valid JSON"),
        (b"[1,2]", True, None, "JSON object"),
        (b'{"messages":[{"role":"user"}]}', True, "model", "'model'"),
        (b'{"model":"","messages":[{"role":"user"}]}', True, "model", "'model'"),
        (b'{"model":"m"}', True, "messages", "'messages'"),
        (b'{"model":"m","messages":[]}', True, "messages", "'messages'"),
        (b'{"model":"m","messages":["x"]}', True, "messages[0]", "role"),
        (b'{"model":"m"}', False, "prompt", "'prompt'"),
        (b'{"model":"m","prompt":5}', False, "prompt", "'prompt'"),
        (b'{"model":"m","prompt":"x","max_tokens":"x"}', False, "max_tokens", "integer"),
        (b'{"model":"m","prompt":"x","max_tokens":true}', False, "max_tokens", "integer"),
        (b'{"model":"m","prompt":"x","max_tokens":0}', False, "max_tokens", "at least 1"),
        (b'{"model":"m","prompt":"x","max_tokens":1001}', False, "max_tokens", "at most 1000"),
        (b'{"model":"m","prompt":"x","n":5}', False, "n", "at most 4"),
        (b'{"model":"m","prompt":"x","stream":"yes"}', False, "stream", "boolean"),
        (b'{"model":"m","prompt":"x","temperature":-1}', False, "temperature", "non-negative"),
    ],
)
def test_bad_requests(raw: bytes, chat: bool, param: str | None, needle: str) -> None:
    err = _err(raw, chat)
    assert err.status == 400
    assert err.param == param
    assert needle in err.message


def test_json_depth_limit() -> None:
    deep: object = "x"
    for _ in range(20):
        deep = [deep]
    raw = orjson.dumps({"model": "m", "prompt": "x", "extra": deep})
    err = _err(raw, chat=False)
    assert "nested deeper than 8" in err.message


def test_with_seed_splices_or_reencodes() -> None:
    from hanode.router.frontdoor import with_seed

    raw = b' {"model":"m","prompt":"x"}'
    body = orjson.loads(raw)
    out = with_seed(raw, body, 42)
    assert orjson.loads(out) == {"model": "m", "prompt": "x", "seed": 42}
    raw_null = b'{"model":"m","prompt":"x","seed":null}'
    out = with_seed(raw_null, orjson.loads(raw_null), 7)
    assert orjson.loads(out)["seed"] == 7
    assert out.count(b'"seed"') == 1


def test_many_brackets_but_shallow_is_accepted() -> None:
    items = ",".join('{"role":"user","content":"[x]"}' for _ in range(40))
    raw = ('{"model":"m","messages":[' + items + "]}").encode()
    assert parse_inference_request(raw, True, LIMITS).model == "m"
