"""Engine vocabulary: what an adapter reports, how failures are classed, and the shared classifier.

Adapters are pure (no I/O): the health checker and router do HTTP and hand the bytes here, so
the per-engine knowledge can be tested against recorded pages and error bodies.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import orjson

from hanode.policies.failure import FailureClass


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """What one scrape said; ``None`` means the engine does not report it (or not this time)."""

    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None  # 0..1
    gpu_mem_frac: float | None = None  # 0..1 device memory used, when the engine reports it
    ttft_buckets: tuple[tuple[float, float], ...] | None = None  # (le seconds, cumulative count)
    tpot_buckets: tuple[tuple[float, float], ...] | None = None  # time per output token, same
    tpot_totals: tuple[float, float] | None = None  # (generation seconds, tokens) counters
    reserved_frac: float | None = None  # share of device memory the engine says it reserved
    sleeping: bool | None = None  # the engine says it is in its sleep mode (memory released)


class EngineAdapter(Protocol):
    name: str
    health_path: str
    metrics_path: str | None
    reserves_memory: bool  # takes its device memory at start (pressure = KV use inside it)

    def parse_metrics(self, text: str) -> EngineMetrics: ...

    def classify_error(self, status: int, body: bytes) -> FailureClass: ...

    def l2_request(
        self, model: str, prompt: str, max_tokens: int, path: str | None = None
    ) -> tuple[str, bytes]: ...

    def l2_text(self, body: bytes) -> str | None: ...


# Lower-case substrings; they are what PyTorch and the CUDA runtime say, whichever engine relays.
OOM_PATTERNS: tuple[str, ...] = (
    "cuda out of memory",
    "outofmemoryerror",
    "cuda error: out of memory",
)

_MAX_BODY = 64 * 1024  # error bodies are small; a huge one is not worth scanning in full


def classify_http_error(
    status: int,
    body: bytes,
    context_patterns: tuple[str, ...] = (),
    server_statuses: frozenset[int] = frozenset(),
) -> FailureClass:
    """Class a non-2xx engine response. Engines supply their context-length wording.

    ``server_statuses`` are 4xx codes an engine uses for its own failures (TGI: 424 when
    generation fails), so they are treated as 5xx. A status below 400 here means the engine
    misbehaved, hence SERVER_ERROR.
    """
    if status == 429:
        return FailureClass.RATE_LIMITED
    if status in (408, 504):
        return FailureClass.TIMEOUT
    if status == 503:
        return FailureClass.BUSY
    if 400 <= status < 500 and status not in server_statuses:
        if _mentions(body, context_patterns):
            return FailureClass.CONTEXT_LENGTH
        return FailureClass.CLIENT_ERROR
    if status >= 400 and _mentions(body, OOM_PATTERNS):
        return FailureClass.GPU_OOM
    return FailureClass.SERVER_ERROR


def _mentions(body: bytes, patterns: tuple[str, ...]) -> bool:
    if not patterns or not body:
        return False
    text = error_text(body)
    return any(p in text for p in patterns)


def error_text(body: bytes) -> str:
    """Lower-cased body plus its JSON string values, so escaped text (``\\u0027``) still matches."""
    head = body[:_MAX_BODY]
    parts = [head.decode("utf-8", "replace")]
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError:
        pass
    else:
        parts.extend(_strings(doc, depth=0))
    return "\n".join(parts).lower()


def _strings(doc: object, depth: int) -> Iterator[str]:
    if depth > 8:
        return
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for value in doc.values():
            yield from _strings(value, depth + 1)
    elif isinstance(doc, list):
        for value in doc:
            yield from _strings(value, depth + 1)
