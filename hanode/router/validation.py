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
    # Arrays and objects in one body: orjson builds each as a Python object on the event loop
    # (a 3.9 MB body of brackets is 1.9M lists, 0.75 s), so their number is bounded too.
    max_json_containers: int = 50_000


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


# Structure only: quotes and brackets kept, ``{}`` read as ``[]`` (depth does not care which).
_STRUCTURE = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"[]{}')


def _structure(raw: bytes) -> bytes:
    """The brackets of ``raw`` outside strings, as ``[`` and ``]``, from a few linear passes
    in C (no Python-level loop over the body, no object per bracket)."""
    if b"\\" in raw:  # escaped backslashes first: then every ``\"`` left is an escaped quote
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Removing two adjacent quotes keeps every other byte on its side of a string boundary:
    # strings without brackets vanish here, so only strings holding brackets cost a split.
    s = raw.translate(_STRUCTURE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in s:
        s = b"".join(s.split(b'"')[::2])
    return s


def _strip_leaves(structure: bytes) -> bytes:
    """One level less: the innermost containers (``[]`` once strings are gone) removed."""
    return structure.replace(b"[]", b"")


def _nested_deeper(structure: bytes, limit: int) -> bool:
    """True if the bracket string nests deeper than ``limit`` (or is unbalanced): at most
    ``limit`` passes, each linear, whatever the body."""
    for _ in range(limit):
        if not structure:
            return False
        structure = _strip_leaves(structure)
    return bool(structure)


def _check_structure(raw: bytes, limits: RequestLimits) -> None:
    """Refuse bodies that would cost the event loop: too many containers or nested too deep,
    decided on the bytes before orjson builds anything."""
    structure = _structure(raw)
    opened = structure.count(b"[")
    if opened > limits.max_json_containers:
        raise RequestError(
            400, f"request JSON has more than {limits.max_json_containers} arrays and objects"
        )
    balanced = opened * 2 == len(structure)
    if balanced and _nested_deeper(structure, limits.max_json_depth):
        raise RequestError(400, f"request JSON is nested deeper than {limits.max_json_depth}")
    # Unbalanced brackets are not JSON: orjson (on at most max_json_containers of them) says so.


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
    # Depth and container count are at most the number of opening brackets: only bodies with
    # more than the depth limit are scanned (a typical request has a handful).
    if raw.count(b"[") + raw.count(b"{") > limits.max_json_depth:
        _check_structure(raw, limits)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(400, "request body must be a JSON object")
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
