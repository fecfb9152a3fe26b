"""Warm-up prompts the leader sends a replica after its reload (the first requests after a
load are the slow ones; better the leader's than a client's): the engine's own L2 request."""

from __future__ import annotations

from hanode.engines.registry import get_adapter
from hanode.http.client import HttpClientError, request

WARM_UP_PROMPT = "Say OK."
WARM_UP_MAX_TOKENS = 4


async def warm_up(url: str, engine: str, model: str, timeout_s: float = 30.0) -> bool:
    """One prompt; True when the replica answered it."""
    try:
        path, body = get_adapter(engine).l2_request(model, WARM_UP_PROMPT, WARM_UP_MAX_TOKENS)
    except (KeyError, ValueError):
        return False
    try:
        resp = await request(
            "POST",
            url + path,
            body=body,
            headers={"content-type": "application/json"},
            timeout=timeout_s,
        )
    except HttpClientError:
        return False
    return resp.status == 200
