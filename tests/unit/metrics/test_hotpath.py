"""Lock-free hot-path metrics render as proper Prometheus counters and histograms."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hanode.metrics.hotpath import HotPathCollector, LabeledCounter, LabeledHistogram
from hanode.metrics.registry import NodeMetrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counter_and_histogram_render() -> None:
    c = LabeledCounter("x_requests", "help", ["model"])
    h = LabeledHistogram("x_seconds", "help", ["model"], [0.1, 1.0])
    reg = CollectorRegistry()
    reg.register(HotPathCollector(c, h))
    c.inc(("m",))
    c.inc(("m",), 2)
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(("m",), v)
    s = _samples(reg)
    assert s[("x_requests_total", (("model", "m"),))] == 3
    assert s[("x_seconds_bucket", (("le", "0.1"), ("model", "m")))] == 2  # le is inclusive
    assert s[("x_seconds_bucket", (("le", "1.0"), ("model", "m")))] == 3
    assert s[("x_seconds_bucket", (("le", "+Inf"), ("model", "m")))] == 4
    assert s[("x_seconds_count", (("model", "m"),))] == 4
    assert abs(s[("x_seconds_sum", (("model", "m"),))] - 3.65) < 1e-9


def test_node_metrics_success_kinds_nest() -> None:
    m = NodeMetrics()
    m.observe_request("m", "r1", 200, True, True, True, 0.2, 0.05)
    m.observe_request("m", "r1", 200, True, False, False, 0.2, None)
    m.observe_request("m", "r1", 503, False, False, False, 0.01, None)
    s = _samples(m.registry)

    def kind(k: str) -> float:
        return s.get(
            ("hanode_request_success_total", (("kind", k), ("model", "m"), ("replica", "r1"))), 0
        )

    assert (kind("technical"), kind("functional"), kind("quality")) == (2, 1, 1)
    key = ("hanode_requests_total", (("model", "m"), ("replica", "r1"), ("status", "503")))
    assert s[key] == 1
    assert s[("hanode_time_to_first_token_seconds_count", (("model", "m"),))] == 1
