"""Admission, degradation and SLO metrics (docs/degradation.md).

Counters move on the request path; queue lengths, shares, pressure, engaged policies and the
SLO figures (burn rates per window) are read from the admission gate when Prometheus scrapes,
through a callable returning plain data (metrics sit below the router in the layers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

Facts = Callable[[], dict[str, Any]]


class _GateCollector(Collector):
    def __init__(self) -> None:
        self.source: Facts | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        facts = self.source() if self.source is not None else {"models": {}, "slo": []}
        share = GaugeMetricFamily(
            "hanode_admission_capacity",
            "Requests of the model this router may have in service (its share of the serving "
            "replicas' capacity)",
            labels=["model"],
        )
        busy = GaugeMetricFamily(
            "hanode_admission_in_service", "Requests admitted and not yet ended", labels=["model"]
        )
        press = GaugeMetricFamily(
            "hanode_admission_pressure",
            "Demand over capacity plus the share of replicas under GPU-memory pressure",
            labels=["model"],
        )
        queued = GaugeMetricFamily(
            "hanode_admission_queue_length", "Requests waiting", labels=["model", "class"]
        )
        qmax = GaugeMetricFamily(
            "hanode_admission_queue_length_max",
            "The longest each queue has been since the node started (never above max_queue)",
            labels=["model", "class"],
        )
        engaged = GaugeMetricFamily(
            "hanode_degradation_engaged",
            "1 while the degradation policy is engaged",
            labels=["model", "policy"],
        )
        for model, m in facts["models"].items():
            share.add_metric([model], m["share"])
            busy.add_metric([model], m["in_service"])
            p = m["pressure"]
            press.add_metric([model], p if math.isfinite(p) else 1e9)
            for c, n in m["queued"].items():
                queued.add_metric([model, c], n)
            for c, n in m["queue_max"].items():
                qmax.add_metric([model, c], n)
            for policy, on in m["engaged"].items():
                engaged.add_metric([model, policy], 1.0 if on else 0.0)
        labels = ["model", "class"]
        burn = GaugeMetricFamily(
            "hanode_slo_burn_rate",
            "Error-budget burn rate over the window (1 = the budget lasts the SLO period)",
            labels=[*labels, "window"],
        )
        target = GaugeMetricFamily(
            "hanode_slo_availability_target", "The class's availability target", labels=labels
        )
        success = GaugeMetricFamily(
            "hanode_slo_success_ratio",
            "Functional success of the class's requests over the last hour",
            labels=labels,
        )
        avail = GaugeMetricFamily(
            "hanode_slo_availability_ratio",
            "Share of the last hour the model had a serving replica",
            labels=labels,
        )
        p95 = GaugeMetricFamily(
            "hanode_slo_latency_p95_seconds",
            "p95 latency of the class's last successful requests",
            labels=labels,
        )
        for r in facts["slo"]:
            key = [r.model, r.request_class]
            target.add_metric(key, r.target)
            for window, value in r.burn.items():
                burn.add_metric([*key, window], value if math.isfinite(value) else 1e9)
            if r.success_rate_1h is not None:
                success.add_metric(key, r.success_rate_1h)
            if r.availability_1h is not None:
                avail.add_metric(key, r.availability_1h)
            if r.p95_latency_s is not None:
                p95.add_metric(key, r.p95_latency_s)
        yield from (share, busy, press, queued, qmax, engaged, burn, target, success, avail, p95)


class AdmissionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "hanode_admission",
            "Admission decisions: admitted, queued, fallback, full (queue full), timeout "
            "(waited past queue_timeout_s), no_replica, client_gone (left while queued)",
            ["model", "class", "outcome"],
            registry=registry,
        )
        self.degraded = Counter(
            "hanode_degraded_requests",
            "Requests changed by a degradation policy (max_tokens, temperature) or refused by "
            "one (prompt), and those sent to a fallback model (fallback)",
            ["model", "policy"],
            registry=registry,
        )
        self.changes = Counter(
            "hanode_degradation_changes",
            "Degradation policies engaging and releasing",
            ["model", "policy", "state"],
            registry=registry,
        )
        # What the burn-rate alert rules compute from, summed over every router.
        self.class_requests = Counter(
            "hanode_class_requests",
            "Requests counted for their class's SLO (client errors other than 429 are not)",
            ["model", "class"],
            registry=registry,
        )
        self.class_failures = Counter(
            "hanode_class_request_failures",
            "Of those, the ones that failed (no usable answer: shed, 5xx, cut)",
            ["model", "class"],
            registry=registry,
        )
        self._collector = _GateCollector()
        registry.register(self._collector)

    def watch(self, source: Facts) -> None:
        """Export what ``source`` returns (the latest router's gate; one per node)."""
        self._collector.source = source
