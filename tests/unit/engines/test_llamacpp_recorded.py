"""The llama.cpp adapter against pages recorded from the llama-server that ``make llama-server``
builds (llama-cpp-python 0.3.36 sdist, llama.cpp commit 0c1e570), under load: 4 slots busy and 4
requests deferred. tests/e2e/test_llamacpp.py checks the same things against the live server."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from hanode.engines.base import EngineMetrics
from hanode.engines.registry import get_adapter
from hanode.policies.failure import FailureClass

FIXTURES = Path(__file__).parent / "fixtures"
ADAPTER = get_adapter("llamacpp")


def test_metrics_page_of_the_built_server() -> None:
    page = (FIXTURES / "llamacpp_b0c1e570_metrics.txt").read_text()
    assert ADAPTER.parse_metrics(page) == EngineMetrics(
        running=4.0, waiting=4.0, tpot_totals=(0.0, 0.0)
    )
    # This build has no KV-usage gauge at all (older ones had llamacpp:kv_cache_usage_ratio).
    assert "kv_cache" not in page


@pytest.mark.parametrize(
    ("status", "fixture", "expected"),
    [
        (400, "llamacpp_b0c1e570_context_length.json", FailureClass.CONTEXT_LENGTH),
        (400, "llamacpp_b0c1e570_invalid_prompt.json", FailureClass.CLIENT_ERROR),
        (503, "llamacpp_b0c1e570_loading.json", FailureClass.BUSY),
    ],
)
def test_errors_of_the_built_server(status: int, fixture: str, expected: FailureClass) -> None:
    body = (FIXTURES / "errors" / fixture).read_bytes()
    assert ADAPTER.classify_error(status, body) is expected
    # llama.cpp's error.code is the HTTP status as a number, not OpenAI's string code.
    assert orjson.loads(body)["error"]["code"] == status


def test_context_error_carries_token_counts() -> None:
    err = orjson.loads((FIXTURES / "errors" / "llamacpp_b0c1e570_context_length.json").read_bytes())
    assert err["error"]["type"] == "exceed_context_size_error"
    assert err["error"]["n_prompt_tokens"] > err["error"]["n_ctx"] == 1024  # -c 4096 / -np 4


def test_l2_text_of_a_recorded_chat_answer() -> None:
    body = (FIXTURES / "responses" / "llamacpp_b0c1e570_chat.json").read_bytes()
    assert ADAPTER.l2_text(body) == " moon ease plain man"
