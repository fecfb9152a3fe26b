"""Validation of inference requests before they cost a replica anything.

Pure: bytes in, a :class:`ParsedRequest` or a :class:`RequestError` (status, message, param)
out. The replica would refuse most of these too, but refusing at the front door is cheaper,
gives one consistent OpenAI-style message whatever the engine, and keeps bad input from
tripping a replica's breaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class RequestLimits:
    max_tokens: int = 131072
    max_n: int = 16
    max_json_depth: int = 32


class RequestError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


@dataclass(slots=True)
class ParsedRequest:
    body: dict[str, Any]
    model: str
    stream: bool


def _depth_ok(value: Any, limit: int) -> bool:
    """Iterative depth check: a deeply nested body must not cost recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return True


def _positive_int(body: dict[str, Any], key: str, limit: int) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"'{key}' must be an integer", param=key)
    if value < 1:
        raise RequestError(400, f"'{key}' must be at least 1, got {value}", param=key)
    if value > limit:
        raise RequestError(400, f"'{key}' must be at most {limit}, got {value}", param=key)


def parse_inference_request(raw: bytes, chat: bool, limits: RequestLimits) -> ParsedRequest:
    """Parse and check a /v1/completions (chat=False) or /v1/chat/completions body."""
    if not raw:
        raise RequestError(400, "request body is empty; expected a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
    # Depth is at most the number of opening brackets: only walk bodies that could be deep.
    brackets = raw.count(b"[") + raw.count(b"{")
    if brackets > limits.max_json_depth and not _depth_ok(body, limits.max_json_depth):
        raise RequestError(400, f"request JSON is nested deeper than {limits.max_json_depth}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(400, "'model' is required and must be a non-empty string", "model")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(
                400, "'messages' is required and must be a non-empty array", "messages"
            )
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise RequestError(
                    400, f"'messages[{i}]' must be an object with a 'role'", f"messages[{i}]"
                )
    else:
        prompt = body.get("prompt")
        if prompt is None or isinstance(prompt, bool | int | float | dict) or prompt == []:
            raise RequestError(
                400, "'prompt' is required: a string, an array of strings or of tokens", "prompt"
            )
    _positive_int(body, "max_tokens", limits.max_tokens)
    _positive_int(body, "max_completion_tokens", limits.max_tokens)
    _positive_int(body, "n", limits.max_n)
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(400, "'stream' must be a boolean", "stream")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature < 0
    ):
        raise RequestError(400, "'temperature' must be a non-negative number", "temperature")
    return ParsedRequest(body=body, model=model, stream=bool(stream))
