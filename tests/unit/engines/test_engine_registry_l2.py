"""Registry, adapter attributes and the L2 probe request/response helpers."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.engines.registry import ENGINE_NAMES, get_adapter
from hanode.pool.replica import ENGINES

RESPONSES = Path(__file__).parent / "fixtures" / "responses"


def test_registry_covers_the_configurable_engines() -> None:
    assert set(ENGINE_NAMES) == set(ENGINES)
    for name in ENGINE_NAMES:
        assert get_adapter(name).name == name


@pytest.mark.parametrize("bad", ["", "VLLM", "llama.cpp", "triton"])
def test_unknown_engine(bad: str) -> None:
    with pytest.raises(ValueError, match=r"unknown engine .*expected one of: vllm, sglang") as exc:
        get_adapter(bad)
    assert exc.value.__suppress_context__  # no KeyError noise in the traceback


@pytest.mark.parametrize(
    ("engine", "health", "metrics"),
    [
        ("vllm", "/health", "/metrics"),
        ("sglang", "/health", "/metrics"),
        ("tgi", "/health", "/metrics"),
        ("llamacpp", "/health", "/metrics"),
        ("openai", "/v1/models", None),
    ],
)
def test_paths(engine: str, health: str, metrics: str | None) -> None:
    adapter = get_adapter(engine)
    assert (adapter.health_path, adapter.metrics_path) == (health, metrics)


@pytest.mark.parametrize("engine", ["vllm", "sglang", "llamacpp"])
def test_l2_request_completions(engine: str) -> None:
    path, body = get_adapter(engine).l2_request("m/x", 'Say "ok"', 3)
    assert path == "/v1/completions"
    assert orjson.loads(body) == {
        "model": "m/x",
        "prompt": 'Say "ok"',
        "max_tokens": 3,
        "temperature": 0,
    }


@pytest.mark.parametrize("engine", ["tgi", "openai"])
def test_l2_request_tgi_and_generic_openai_use_chat(engine: str) -> None:
    """A chat-only OpenAI-compatible server (or gateway) has no /v1/completions."""
    path, body = get_adapter(engine).l2_request("tgi", "2+2=", 2)
    assert path == "/v1/chat/completions"
    assert orjson.loads(body) == {
        "model": "tgi",
        "messages": [{"role": "user", "content": "2+2="}],
        "max_tokens": 2,
        "temperature": 0,
    }


@pytest.mark.parametrize(
    ("engine", "fixture", "text"),
    [
        ("vllm", "vllm_completion.json", " Paris."),
        ("llamacpp", "llamacpp_completion.json", " 4"),
        ("tgi", "tgi_chat_completion.json", "Paris"),
        ("openai", "tgi_chat_completion.json", "Paris"),
    ],
)
def test_l2_text_recorded(engine: str, fixture: str, text: str) -> None:
    assert get_adapter(engine).l2_text((RESPONSES / fixture).read_bytes()) == text


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"choices": []}',
        b'{"choices": "x"}',
        b'{"choices": [1]}',
        b'{"choices": [{"text": 5}]}',
        b'{"choices": [{"message": {"content": null}}]}',
        b'{"choices": [{"message": "hi"}]}',
        b'{"error": {"message": "boom"}}',
    ],
)
def test_l2_text_unparseable(body: bytes) -> None:
    assert get_adapter("vllm").l2_text(body) is None


def test_l2_text_prefers_completion_text_and_keeps_empty() -> None:
    body = b'{"choices": [{"text": "", "message": {"content": "chat"}}]}'
    assert get_adapter("vllm").l2_text(body) == ""


@given(st.binary(max_size=200))
def test_l2_text_never_raises(body: bytes) -> None:
    result = get_adapter("sglang").l2_text(body)
    assert result is None or isinstance(result, str)


@pytest.mark.parametrize(
    ("path", "chat"),
    [
        ("/v1/chat/completions", True),
        ("/openai/v1/chat/completions", True),
        ("/v1/completions", False),
        ("/gateway/generate", False),
    ],
)
@pytest.mark.parametrize("engine", ["vllm", "tgi", "openai"])
def test_configured_l2_path_wins_and_picks_the_body(engine: str, path: str, chat: bool) -> None:
    got, body = get_adapter(engine).l2_request("m", "hi", 2, path)
    assert got == path
    assert ("messages" in orjson.loads(body)) is chat
