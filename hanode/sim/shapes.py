"""JSON bodies in the shapes vLLM's OpenAI server uses (errors, completions, chunks)."""

from __future__ import annotations

import os
from typing import Any, Final

import orjson

OOM_MESSAGE: Final = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB "
    "of which 1.02 GiB is free. Including non-PyTorch memory, this process has 78.11 GiB memory "
    "in use. Of the allocated memory 76.40 GiB is allocated by PyTorch, and 1.21 GiB is reserved "
    "by PyTorch but unallocated."
)


class ApiError(Exception):
    """An error answer: status, body and extra raw header lines."""

    def __init__(self, status: int, body: bytes, extra_headers: bytes = b"") -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.extra_headers = extra_headers


def vllm_error(status: int, message: str, err_type: str) -> ApiError:
    """vLLM's ErrorResponse: {"object":"error","message","type","param","code"}."""
    body = orjson.dumps(
        {"object": "error", "message": message, "type": err_type, "param": None, "code": status}
    )
    return ApiError(status, body)


def openai_error(
    status: int, message: str, err_type: str, code: str | None = None, extra_headers: bytes = b""
) -> ApiError:
    """OpenAI's {"error": {...}} shape (auth, rate limits, loading)."""
    body = orjson.dumps(
        {"error": {"message": message, "type": err_type, "param": None, "code": code}}
    )
    return ApiError(status, body, extra_headers)


def bad_request(message: str) -> ApiError:
    return vllm_error(400, message, "BadRequestError")


def context_error(max_model_len: int, prompt_tokens: int, max_tokens: int) -> ApiError:
    return bad_request(
        f"This model's maximum context length is {max_model_len} tokens. However, you requested "
        f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in "
        "the completion). Please reduce the length of the messages or completion."
    )


def model_not_found(model: str) -> ApiError:
    return vllm_error(404, f"The model `{model}` does not exist.", "NotFoundError")


def oom_error() -> ApiError:
    return vllm_error(500, OOM_MESSAGE, "InternalServerError")


def busy_error() -> ApiError:
    return vllm_error(503, "Service is busy: the engine cannot take more requests now.",
                      "ServiceUnavailableError")  # fmt: skip


def rate_limit_error(retry_after_s: float) -> ApiError:
    seconds = max(0, round(retry_after_s))
    return openai_error(
        429,
        f"Rate limit reached for requests. Please retry after {seconds} seconds.",
        "rate_limit_error",
        "rate_limit_exceeded",
        b"retry-after: %d\r\n" % seconds,
    )


def loading_error() -> ApiError:
    return openai_error(503, "The model is still loading. Please retry later.", "server_error",
                        "model_loading")  # fmt: skip


def unauthorized() -> ApiError:
    return openai_error(401, "Unauthorized: missing or invalid API key.",
                        "invalid_request_error", "invalid_api_key")  # fmt: skip


def not_found() -> ApiError:
    return ApiError(404, b'{"detail":"Not Found"}')


def method_not_allowed() -> ApiError:
    return ApiError(405, b'{"detail":"Method Not Allowed"}')


class IdMaker:
    """Cheap unique ids: a random per-process prefix and a counter."""

    __slots__ = ("_n", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._n = 0

    def next(self, kind: str) -> str:
        self._n += 1
        return f"{kind}-{self._prefix}{self._n:08x}"


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }


def completion_body(
    rid: str,
    created: int,
    model: str,
    texts: list[str],
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    chat: bool,
) -> bytes:
    if chat:
        choices: list[dict[str, Any]] = [
            {
                "index": i,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
            }
            for i, text in enumerate(texts)
        ]
        obj = "chat.completion"
    else:
        choices = [
            {
                "index": i,
                "text": text,
                "logprobs": None,
                "finish_reason": finish_reason,
                "stop_reason": None,
            }
            for i, text in enumerate(texts)
        ]
        obj = "text_completion"
    return orjson.dumps(
        {
            "id": rid,
            "object": obj,
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage(prompt_tokens, completion_tokens),
        }
    )


class ChunkWriter:
    """SSE events of one streamed choice (index 0)."""

    __slots__ = ("_chat", "_head")

    def __init__(self, rid: str, created: int, model: str, chat: bool) -> None:
        self._chat = chat
        obj = "chat.completion.chunk" if chat else "text_completion"
        # Every chunk starts with the same fields; render them once.
        head = orjson.dumps({"id": rid, "object": obj, "created": created, "model": model})
        self._head = b"data: " + head[:-1] + b","

    def _event(self, rest: dict[str, Any]) -> bytes:
        return self._head + orjson.dumps(rest)[1:] + b"\n\n"

    def role(self) -> bytes:
        return self._event(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            }
        )

    def token(self, text: str, finish_reason: str | None = None) -> bytes:
        if self._chat:
            delta: dict[str, Any] = {"content": text} if text else {}
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        if finish_reason is not None:
            choice["stop_reason"] = None
        return self._event({"choices": [choice]})

    def usage(self, prompt: int, completion: int) -> bytes:
        return self._event({"choices": [], "usage": usage(prompt, completion)})


DONE: Final = b"data: [DONE]\n\n"
