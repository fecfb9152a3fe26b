from __future__ import annotations

import orjson
import pytest

from hanode.sim.shapes import ApiError
from hanode.sim.validate import parse_generation


def parse(body: object, chat: bool = False, max_len: int = 100) -> object:
    return parse_generation(orjson.dumps(body), chat, "m", max_len)


def error(body: bytes | object, chat: bool = False, max_len: int = 100) -> ApiError:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(ApiError) as info:
        parse_generation(raw, chat, "m", max_len)
    return info.value


def test_completion_defaults() -> None:
    req = parse_generation(b'{"prompt": "a b c"}', False, "m", 100)
    assert req.prompt_tokens == (3,)
    assert req.max_tokens == 16 and req.n == 1 and not req.stream
    assert not req.deterministic  # default temperature is 1.0, no seed


def test_determinism_flags() -> None:
    assert parse_generation(b'{"prompt":"x","seed":1}', False, "m", 100).deterministic
    assert parse_generation(b'{"prompt":"x","temperature":0}', False, "m", 100).deterministic
    assert not parse_generation(b'{"prompt":"x","temperature":0.7}', False, "m", 100).deterministic


def test_chat_counting_and_batch_prompts() -> None:
    req = parse_generation(
        b'{"model":"m","messages":[{"role":"user","content":"hi there"}],"max_tokens":3}',
        True,
        "m",
        100,
    )
    assert req.prompt_tokens == (6,) and req.max_tokens == 3
    batch = parse_generation(b'{"prompt":["a", "b c"], "n": 2}', False, "m", 100)
    assert batch.prompt_tokens == (1, 2) and batch.n == 2
    ids = parse_generation(b'{"prompt":[1,2,3,4]}', False, "m", 100)
    assert ids.prompt_tokens == (4,)


def test_errors() -> None:
    assert error(b"{nope").status == 400
    assert error({"max_tokens": 3}).status == 400
    assert error({"prompt": "x"}, chat=True).status == 400
    assert error({"messages": []}, chat=True).status == 400
    assert error({"prompt": "x", "max_tokens": 0}).status == 400
    assert error({"prompt": "x", "stream": True, "n": 2}).status == 400
    missing = error({"prompt": "x", "model": "other"})
    assert missing.status == 404
    assert orjson.loads(missing.body)["message"] == "The model `other` does not exist."


def test_context_length_message() -> None:
    err = error({"prompt": "w " * 10, "max_tokens": 95})
    body = orjson.loads(err.body)
    assert err.status == 400
    assert body == {
        "object": "error",
        "message": "This model's maximum context length is 100 tokens. However, you requested "
        "105 tokens (10 in the messages, 95 in the completion). Please reduce the length of the "
        "messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
