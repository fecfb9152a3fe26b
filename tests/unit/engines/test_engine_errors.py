"""classify_error against recorded engine error bodies, and the shared status rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from hanode.engines.base import classify_http_error
from hanode.engines.registry import ENGINE_NAMES, get_adapter
from hanode.policies.failure import FailureClass

ERRORS = Path(__file__).parent / "fixtures" / "errors"
F = FailureClass

RECORDED = [
    ("vllm", 400, "vllm_context_length.json", F.CONTEXT_LENGTH),
    ("vllm", 400, "vllm_max_tokens_too_large.json", F.CONTEXT_LENGTH),
    ("vllm", 400, "vllm_prompt_too_long.json", F.CONTEXT_LENGTH),
    ("vllm", 400, "vllm_bad_request.json", F.CLIENT_ERROR),
    ("vllm", 500, "vllm_oom.json", F.GPU_OOM),
    ("vllm", 500, "vllm_torch_oom.json", F.GPU_OOM),
    ("vllm", 500, "vllm_internal.json", F.SERVER_ERROR),
    ("sglang", 400, "sglang_context_length.json", F.CONTEXT_LENGTH),
    ("sglang", 400, "sglang_requested_too_many.json", F.CONTEXT_LENGTH),
    ("sglang", 500, "sglang_cuda_error.json", F.GPU_OOM),
    ("tgi", 422, "tgi_context_length.json", F.CONTEXT_LENGTH),
    ("tgi", 422, "tgi_inputs_too_long.json", F.CONTEXT_LENGTH),
    ("tgi", 422, "tgi_bad_temperature.json", F.CLIENT_ERROR),
    ("tgi", 424, "tgi_generation_oom.json", F.GPU_OOM),
    ("tgi", 424, "tgi_generation_failed.json", F.SERVER_ERROR),
    ("tgi", 429, "tgi_overloaded.json", F.RATE_LIMITED),
    ("llamacpp", 400, "llamacpp_context_length.json", F.CONTEXT_LENGTH),
    ("llamacpp", 400, "llamacpp_invalid.json", F.CLIENT_ERROR),
    ("llamacpp", 503, "llamacpp_loading.json", F.BUSY),
    ("openai", 400, "openai_context_length.json", F.CONTEXT_LENGTH),
]


@pytest.mark.parametrize(("engine", "status", "fixture", "expected"), RECORDED)
def test_recorded_errors(engine: str, status: int, fixture: str, expected: FailureClass) -> None:
    body = (ERRORS / fixture).read_bytes()
    assert get_adapter(engine).classify_error(status, body) is expected


@pytest.mark.parametrize(
    ("engine", "status", "fixture"),
    [(e, s, f) for e, s, f, c in RECORDED if c is F.CONTEXT_LENGTH and e != "openai"],
)
def test_generic_adapter_knows_every_engines_context_wording(
    engine: str, status: int, fixture: str
) -> None:
    body = (ERRORS / fixture).read_bytes()
    assert get_adapter("openai").classify_error(status, body) is F.CONTEXT_LENGTH


def test_generic_adapter_knows_openai_error_code() -> None:
    body = b'{"error": {"message": "Input too long", "code": "context_length_exceeded"}}'
    assert get_adapter("openai").classify_error(400, body) is F.CONTEXT_LENGTH
    assert get_adapter("vllm").classify_error(400, body) is F.CLIENT_ERROR


def test_engines_only_know_their_own_wording() -> None:
    tgi_body = (ERRORS / "tgi_context_length.json").read_bytes()
    assert get_adapter("vllm").classify_error(422, tgi_body) is F.CLIENT_ERROR
    # 424 is an engine failure only for TGI; elsewhere it is an ordinary 4xx
    oom = (ERRORS / "tgi_generation_oom.json").read_bytes()
    assert get_adapter("vllm").classify_error(424, oom) is F.CLIENT_ERROR


@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, F.RATE_LIMITED),
        (503, F.BUSY),
        (408, F.TIMEOUT),
        (504, F.TIMEOUT),
        (500, F.SERVER_ERROR),
        (502, F.SERVER_ERROR),
        (400, F.CLIENT_ERROR),
        (404, F.CLIENT_ERROR),
        (200, F.SERVER_ERROR),  # a "failure" with a success code: the engine misbehaved
        (302, F.SERVER_ERROR),
    ],
)
def test_status_rules(engine: str, status: int, expected: FailureClass) -> None:
    assert get_adapter(engine).classify_error(status, b"") is expected
    assert get_adapter(engine).classify_error(status, b"\xff\xfe not json") is expected


def test_status_wins_over_body_for_429_503_504() -> None:
    ctx = (ERRORS / "vllm_context_length.json").read_bytes()
    oom = (ERRORS / "vllm_oom.json").read_bytes()
    adapter = get_adapter("vllm")
    assert adapter.classify_error(429, ctx) is F.RATE_LIMITED
    assert adapter.classify_error(503, oom) is F.BUSY
    assert adapter.classify_error(504, oom) is F.TIMEOUT


def test_context_wording_on_5xx_is_not_context_length() -> None:
    ctx = (ERRORS / "vllm_context_length.json").read_bytes()
    assert get_adapter("vllm").classify_error(500, ctx) is F.SERVER_ERROR


def test_oom_wording_on_4xx_is_not_oom() -> None:
    oom = (ERRORS / "vllm_oom.json").read_bytes()
    assert get_adapter("vllm").classify_error(400, oom) is F.CLIENT_ERROR


def test_plain_text_and_json_escaped_bodies() -> None:
    adapter = get_adapter("vllm")
    assert adapter.classify_error(500, b"torch.OutOfMemoryError: CUDA out of memory") is F.GPU_OOM
    escaped = b'{"message": "This model\\u0027s MAXIMUM\\u0020context length is 4096 tokens"}'
    assert adapter.classify_error(400, escaped) is F.CONTEXT_LENGTH


def test_base_helper_defaults() -> None:
    body = b"This model's maximum context length is 4096 tokens"
    assert classify_http_error(400, body) is F.CLIENT_ERROR  # no patterns, no context class
    assert classify_http_error(400, body, ("maximum context length",)) is F.CONTEXT_LENGTH
    assert classify_http_error(424, b"CUDA out of memory", (), frozenset({424})) is F.GPU_OOM
