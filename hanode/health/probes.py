"""The I/O half of health checking: one function per layer, each bounded by a timeout.

L1: does the process answer its health endpoint? L2: does the model complete a tiny prompt
with non-empty text? L3 inputs: the engine's own metrics page (queue, KV cache, GPU memory).
Results are plain values; deciding what they mean is policy (``hanode.policies``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hanode.engines.base import EngineAdapter, EngineMetrics
from hanode.http.client import HttpClientError, request


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    detail: str = ""
    status: int = 0  # the HTTP status when one came back


async def probe_l1(base_url: str, adapter: EngineAdapter, timeout_s: float) -> ProbeResult:
    try:
        resp = await request("GET", base_url + adapter.health_path, timeout=timeout_s)
    except HttpClientError as exc:
        return ProbeResult(False, str(exc))
    if resp.status != 200:
        return ProbeResult(False, f"{adapter.health_path} answered HTTP {resp.status}")
    return ProbeResult(True)


async def probe_l2(
    base_url: str,
    adapter: EngineAdapter,
    model: str,
    prompt: str,
    max_tokens: int,
    timeout_s: float,
    headers: dict[str, str] | None = None,
    path: str | None = None,
) -> ProbeResult:
    """``path``: the replica's configured L2 path, else the engine's own."""
    path, body = adapter.l2_request(model, prompt, max_tokens, path)
    try:
        resp = await request("POST", base_url + path, body=body, headers=headers, timeout=timeout_s)
    except HttpClientError as exc:
        return ProbeResult(False, f"test prompt failed: {exc}")
    if resp.status != 200:
        return ProbeResult(False, f"test prompt to {path} answered HTTP {resp.status}", resp.status)
    text = adapter.l2_text(resp.body)
    if not text or not text.strip():
        return ProbeResult(False, "test prompt returned no text", resp.status)
    return ProbeResult(True, status=resp.status)


async def scrape_metrics(
    base_url: str, adapter: EngineAdapter, timeout_s: float
) -> EngineMetrics | None:
    if adapter.metrics_path is None:
        return None
    try:
        resp = await request("GET", base_url + adapter.metrics_path, timeout=timeout_s)
    except HttpClientError:
        return None
    if resp.status != 200:
        return None
    # A real engine's page is tens of kB: parse it off the event loop.
    text = resp.body.decode("utf-8", "replace")
    return await asyncio.get_running_loop().run_in_executor(None, adapter.parse_metrics, text)
