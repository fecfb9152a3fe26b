"""OpenAI-style error responses.

Clients of an OpenAI-compatible endpoint parse ``{"error": {...}}``; the official SDK maps the
HTTP status to an exception class. Every refusal from the front door uses this one shape.
"""

from __future__ import annotations

import orjson

from hanode.http.responder import Responder

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> bytes:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def send_error(
    responder: Responder,
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
    extra_headers: bytes = b"",
) -> None:
    if retry_after is not None:
        extra_headers += b"retry-after: %d\r\n" % max(1, round(retry_after))
    responder.send(status, error_body(status, message, param, code), extra_headers=extra_headers)
