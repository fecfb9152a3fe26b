"""Reading engines' error bodies, which come in several shapes.

vLLM: ``{"object": "error", "message": ..., "type": ..., "code": 400}``; OpenAI and llama.cpp:
``{"error": {"message": ..., "type": ...}}``; TGI: ``{"error": "...", "error_type": ...}``.
"""

from __future__ import annotations

import orjson


def error_message(body: bytes, status: int) -> str:
    """The human message inside an engine's error body, or a short generic one."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(doc.get("message"), str):
            return str(doc["message"])
        if isinstance(doc.get("detail"), str):
            return str(doc["detail"])
    text = body[:300].decode("utf-8", "replace").strip()
    return text or f"replica answered HTTP {status}"


def retry_after_seconds(value: bytes | None) -> float | None:
    """Retry-After in seconds (HTTP-date values are rare from engines and are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
