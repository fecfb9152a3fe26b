"""The one adapter implementation; engines subclass it and only declare names and patterns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

from hanode.engines.base import EngineMetrics, classify_http_error
from hanode.engines.prom_text import Buckets, MetricsPage, parse
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
    tpot: tuple[str, ...] = ()  # time-per-output-token histogram base names, seconds
    # counters (seconds spent generating, tokens generated) where there is no TPOT histogram
    tpot_totals: tuple[str, str] | None = None
    # (info gauge, label) carrying the share of device memory the engine reserved
    reservation: tuple[str, str] | None = None
    sleep_state: str | None = None  # gauge labelled sleep_state="awake"|..., 1 for the current


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
        tpot_buckets=_first_buckets(page, names.tpot),
        tpot_totals=_totals(page, names.tpot_totals),
        reserved_frac=_label_fraction(page, names.reservation),
        sleeping=_sleeping(page, names.sleep_state),
    )


def _sleeping(page: MetricsPage, name: str | None) -> bool | None:
    """vLLM's ``engine_sleep_state``: one sample per state, 1 on the current one."""
    if name is None:
        return None
    states = [(s.label("sleep_state"), s.value) for s in page.samples(name)]
    if not states:
        return None
    return any(value >= 1.0 and state != "awake" for state, value in states)


def _totals(page: MetricsPage, names: tuple[str, str] | None) -> tuple[float, float] | None:
    if names is None:
        return None
    seconds, tokens = (_count(page.value(n)) for n in names)
    return (seconds, tokens) if seconds is not None and tokens is not None else None


def _first_buckets(page: MetricsPage, names: tuple[str, ...]) -> Buckets | None:
    for name in names:
        buckets = page.buckets(name)
        if buckets:
            return buckets
    return None


def _label_fraction(page: MetricsPage, where: tuple[str, str] | None) -> float | None:
    """A fraction carried as a label value (vLLM's ``cache_config_info``); the largest wins."""
    if where is None:
        return None
    name, label = where
    found: list[float] = []
    for sample in page.samples(name):
        try:
            value = float(sample.label(label) or "")
        except ValueError:
            continue
        if math.isfinite(value) and 0.0 <= value <= 1.0:
            found.append(value)
    return max(found) if found else None


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


COMPLETIONS_PATH = "/v1/completions"
CHAT_PATH = "/v1/chat/completions"


def completions_request(
    model: str, prompt: str, max_tokens: int, path: str = COMPLETIONS_PATH
) -> tuple[str, bytes]:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    return path, orjson.dumps(body)


def chat_request(
    model: str, prompt: str, max_tokens: int, path: str = CHAT_PATH
) -> tuple[str, bytes]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    return path, orjson.dumps(body)


def is_chat_path(path: str) -> bool:
    """A configured L2 path speaks the chat API when it ends like OpenAI's chat endpoint."""
    return path.rstrip("/").endswith("chat/completions")


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
    reserves_memory: bool = False  # takes its device memory at start (vLLM, SGLang, TGI)

    def parse_metrics(self, text: str) -> EngineMetrics:
        return metrics_from_text(text, self.metric_names)

    def classify_error(self, status: int, body: bytes) -> FailureClass:
        return classify_http_error(status, body, self.context_patterns, self.server_statuses)

    def l2_request(
        self, model: str, prompt: str, max_tokens: int, path: str | None = None
    ) -> tuple[str, bytes]:
        """The test prompt; ``path`` ([[replicas]] ``l2_path``) replaces the engine's default,
        with the chat body when it is a chat path."""
        if path is not None:
            build = chat_request if is_chat_path(path) else completions_request
            return build(model, prompt, max_tokens, path)
        if self.chat_l2:
            return chat_request(model, prompt, max_tokens)
        return completions_request(model, prompt, max_tokens)

    def l2_text(self, body: bytes) -> str | None:
        return completion_text(body)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
