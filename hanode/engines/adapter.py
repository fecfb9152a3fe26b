"""The one adapter implementation; engines subclass it and only declare names and patterns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

from hanode.engines.base import EngineMetrics, classify_http_error
from hanode.engines.prom_text import MetricsPage, parse
from hanode.policies.failure import FailureClass


@dataclass(frozen=True, slots=True)
class MetricNames:
    """Where an engine publishes each signal. For tuples the first name present wins, so a
    renamed metric lists its new name before the old one."""

    running: str | None = None
    waiting: str | None = None
    kv_usage: tuple[str, ...] = ()
    gpu_mem: tuple[str, ...] = ()
    ttft: str | None = None  # histogram base name, seconds


def metrics_from_text(text: str, names: MetricNames) -> EngineMetrics:
    """Counts are summed over label sets (data-parallel engines export one set each); fractions
    take the max, because the fullest engine is the one that will stall."""
    page = parse(text)
    return EngineMetrics(
        running=_count(page.value(names.running)) if names.running else None,
        waiting=_count(page.value(names.waiting)) if names.waiting else None,
        kv_usage=_first_fraction(page, names.kv_usage),
        gpu_mem_frac=_first_fraction(page, names.gpu_mem),
        ttft_buckets=page.buckets(names.ttft) if names.ttft else None,
    )


def _count(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return max(0.0, value)


def _first_fraction(page: MetricsPage, names: tuple[str, ...]) -> float | None:
    for name in names:
        value = page.value(name, agg="max")
        if value is not None and math.isfinite(value):
            return min(1.0, max(0.0, value))
    return None


def completions_request(model: str, prompt: str, max_tokens: int) -> tuple[str, bytes]:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return "/v1/completions", orjson.dumps(body)


def chat_request(model: str, prompt: str, max_tokens: int) -> tuple[str, bytes]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    return "/v1/chat/completions", orjson.dumps(body)


def completion_text(body: bytes) -> str | None:
    """``choices[0].text`` (completions) or ``choices[0].message.content`` (chat)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    choices = doc.get("choices") if isinstance(doc, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(first, dict):
        return None
    text = first.get("text")
    if isinstance(text, str):
        return text
    message = first.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


class StandardAdapter:
    """OpenAI-compatible engine with a Prometheus page; subclasses override class attributes."""

    name: str = ""
    health_path: str = "/health"
    metrics_path: str | None = "/metrics"
    metric_names: MetricNames = MetricNames()
    context_patterns: tuple[str, ...] = ()  # lower-case substrings of context-length errors
    server_statuses: frozenset[int] = frozenset()  # 4xx codes that mean "the engine failed"
    chat_l2: bool = False  # probe with /v1/chat/completions instead of /v1/completions

    def parse_metrics(self, text: str) -> EngineMetrics:
        return metrics_from_text(text, self.metric_names)

    def classify_error(self, status: int, body: bytes) -> FailureClass:
        return classify_http_error(status, body, self.context_patterns, self.server_statuses)

    def l2_request(self, model: str, prompt: str, max_tokens: int) -> tuple[str, bytes]:
        build = chat_request if self.chat_l2 else completions_request
        return build(model, prompt, max_tokens)

    def l2_text(self, body: bytes) -> str | None:
        return completion_text(body)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
