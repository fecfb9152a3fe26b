"""Prometheus metrics of a hanode node.

Per-request counters and histograms are updated on the hot path through cached label children
(a dict lookup, then one locked add). Per-replica gauges (health level, weight, GPU memory, KV
usage, in-flight) are not updated per request at all: a collector reads them from the pool
snapshot and the router's in-flight table when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hanode.metrics.admission import AdmissionMetrics
from hanode.metrics.hotpath import HotPathCollector, LabeledCounter, LabeledHistogram
from hanode.metrics.merge import Family, merged_registry
from hanode.metrics.node_state import ClusterFacts, NodeStateCollector, ProcessFacts
from hanode.pool.snapshot import PoolSnapshot

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
# Time to recover: seconds (a hot standby, a sleeping one woken) to many minutes (a cold load).
MTTR_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10)

SUCCESS_KINDS = ("technical", "functional", "quality")
_STATUS_TEXT = {code: str(code) for code in range(100, 600)}


class _ReplicaCollector(Collector):
    def __init__(
        self, snapshot: Callable[[], PoolSnapshot], inflight: Callable[[], Mapping[str, int]]
    ) -> None:
        self._snapshot = snapshot
        self._inflight = inflight

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self._snapshot()
        inflight = self._inflight()
        labels = ["replica", "model"]
        level = GaugeMetricFamily(
            "hanode_replica_health_level",
            "Health level: 0 down (L1), 1 unready (L2), 2 degraded (L3), 3 healthy",
            labels=labels,
        )
        weight = GaugeMetricFamily(
            "hanode_replica_weight", "Traffic weight assigned to the replica (0..1)", labels=labels
        )
        gpu = GaugeMetricFamily(
            "hanode_replica_gpu_memory_usage_perc",
            "GPU memory pressure (0..1): KV use inside the reservation for engines that reserve "
            "memory, device used/total otherwise (docs/health-signals.md)",
            labels=labels,
        )
        growth = GaugeMetricFamily(
            "hanode_replica_gpu_memory_growth_perc",
            "Device memory grown past its baseline learned once serving (share of the GPU)",
            labels=labels,
        )
        ttft = GaugeMetricFamily(
            "hanode_replica_ttft_seconds",
            "Time to first token (streams, else the engine's)",
            labels=labels,
        )
        tpot = GaugeMetricFamily(
            "hanode_replica_tpot_seconds",
            "Time per output token (answers, else the engine's)",
            labels=labels,
        )
        kv = GaugeMetricFamily(
            "hanode_replica_kv_cache_usage_perc", "KV-cache usage reported (0..1)", labels=labels
        )
        queue = GaugeMetricFamily(
            "hanode_replica_queue_depth", "Requests waiting in the engine", labels=labels
        )
        busy = GaugeMetricFamily(
            "hanode_replica_inflight_requests", "Requests this node has in flight", labels=labels
        )
        for name, state in snap.replicas.items():
            key = [name, state.spec.model]
            obs = state.observation
            level.add_metric(key, float(obs.level))
            weight.add_metric(key, state.weight)
            if obs.gpu_mem_frac is not None:
                gpu.add_metric(key, obs.gpu_mem_frac)
            if obs.kv_usage is not None:
                kv.add_metric(key, obs.kv_usage)
            if obs.gpu_growth is not None:
                growth.add_metric(key, obs.gpu_growth)
            if obs.ttft_ms is not None:
                ttft.add_metric(key, obs.ttft_ms / 1000.0)
            if obs.tpot_ms is not None:
                tpot.add_metric(key, obs.tpot_ms / 1000.0)
            if obs.queue_depth is not None:
                queue.add_metric(key, obs.queue_depth)
            busy.add_metric(key, float(inflight.get(name, 0)))
        yield from (level, weight, gpu, growth, ttft, tpot, kv, queue, busy)


class NodeMetrics:
    """All metric objects of one node, on their own registry (tests run several nodes)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # What /metrics exports: this registry, or it merged with the node's data-plane
        # workers' (merge_with).
        self.exposed = self.registry
        r = self.registry
        # Per-request metrics: lock-free, exported at scrape time.
        self.requests = LabeledCounter(
            "hanode_requests",
            "Inference requests answered, by model, replica and HTTP status",
            ["model", "replica", "status"],
        )
        self.success = LabeledCounter(
            "hanode_request_success",
            "Successful requests by kind: technical (2xx), functional (usable output), "
            "quality (within the latency SLO)",
            ["model", "replica", "kind"],
        )
        self.duration = LabeledHistogram(
            "hanode_request_duration_seconds",
            "End-to-end request duration seen by the front door",
            ["model"],
            LATENCY_BUCKETS,
        )
        self.ttft = LabeledHistogram(
            "hanode_time_to_first_token_seconds",
            "Time from request to the first response byte of a streamed answer",
            ["model"],
            TTFT_BUCKETS,
        )
        r.register(HotPathCollector(self.requests, self.success, self.duration, self.ttft))
        self.rejected = Counter(
            "hanode_rejected_requests",
            "Requests refused at the front door, by reason",
            ["reason"],
            registry=r,
        )
        self.no_replica = Counter(
            "hanode_no_replica",
            "Requests answered 503 because no replica of the model could take them",
            ["model"],
            registry=r,
        )
        self.retries = Counter(
            "hanode_retries",
            "Tries sent again to another replica, by failure class",
            ["model", "failure_class"],
            registry=r,
        )
        self.retry_budget_exhausted = Counter(
            "hanode_retry_budget_exhausted",
            "Retries refused because the retry budget was spent",
            ["model"],
            registry=r,
        )
        self.stream_continuations = Counter(
            "hanode_stream_continuations",
            "Streams broken after their first byte and continued on another replica, by the "
            "replica that broke and why (connection, stall, error_event)",
            ["model", "replica", "reason"],
            registry=r,
        )
        self.stream_continuation_refused = Counter(
            "hanode_stream_continuation_refused",
            "Broken streams ended with an error event because they could not be continued",
            ["model", "reason"],
            registry=r,
        )
        self.streams_continued = Counter(
            "hanode_streams_continued",
            "Streams that were continued at least once, by how they ended (complete, cut)",
            ["model", "result"],
            registry=r,
        )
        self.hedges = Counter(
            "hanode_hedges",
            "Hedged first tries: sent, won (the hedge answered first), lost (cancelled: the "
            "first try answered first), failed (on its own), budget (not sent: no budget)",
            ["model", "result"],
            registry=r,
        )
        self.upstream_failures = Counter(
            "hanode_upstream_failures",
            "Failed tries against a replica, by failure class",
            ["replica", "failure_class"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "hanode_breaker_transitions",
            "Circuit breaker state changes, by replica, failure class and new state",
            ["replica", "failure_class", "to_state"],
            registry=r,
        )
        self.health_transitions = Counter(
            "hanode_health_transitions",
            "Health level changes of replicas",
            ["replica", "to_level"],
            registry=r,
        )
        self.mttr = Histogram(
            "hanode_incident_mttr_seconds",
            "Time from an incident's detection (an active replica lost) to capacity restored, "
            "per model (from the replicated incident timeline: every node exports the same)",
            ["model"],
            buckets=MTTR_BUCKETS,
            registry=r,
        )
        self.rollout_duration = Histogram(
            "hanode_rollout_duration_seconds",
            "Rolling reloads (hanodectl reload) from start to end, per model and outcome "
            "(done, failed, aborted; from the replicated record: every node exports the same)",
            ["model", "state"],
            buckets=MTTR_BUCKETS,
            registry=r,
        )
        self.rollout_unavailable = Histogram(
            "hanode_rollout_replica_unavailable_seconds",
            "How long each replica was out of routing during a rolling reload (drained to "
            "back in service), per model",
            ["model"],
            buckets=MTTR_BUCKETS,
            registry=r,
        )
        self.replica_restarts = Counter(
            "hanode_replica_restarts",
            "Restarts of a replica by its node's supervisor (after a backoff, or by an operator)",
            ["replica"],
            registry=r,
        )
        self.crash_loops = Counter(
            "hanode_replica_crash_loops",
            "Replicas stopped as a crash loop (restarted too often), until hanodectl restart",
            ["replica"],
            registry=r,
        )
        self.admission = AdmissionMetrics(r)  # admission, degradation, SLOs
        self.gpu_events = Counter(
            "hanode_gpu_memory_events",
            "GPU memory level changes (prepare capacity, reduce, remove, normal)",
            ["replica", "level"],
            registry=r,
        )

    def watch_pool(
        self, snapshot: Callable[[], PoolSnapshot], inflight: Callable[[], Mapping[str, int]]
    ) -> None:
        self.registry.register(_ReplicaCollector(snapshot, inflight))

    def merge_with(self, others: Callable[[], list[list[Family]]]) -> None:
        """Export the sum of this registry and ``others()`` (the workers' families)."""
        self.exposed = merged_registry(self.registry, others)

    def watch_node(
        self,
        cluster: Callable[[], ClusterFacts | None],
        processes: Callable[[], Mapping[str, ProcessFacts]],
    ) -> None:
        """Cluster view and supervised processes as gauges (hanode.metrics.node_state)."""
        self.registry.register(NodeStateCollector(cluster, processes))

    # -- hot path ------------------------------------------------------------------------------
    def observe_request(
        self,
        model: str,
        replica: str,
        status: int,
        technical: bool,
        functional: bool,
        quality: bool,
        duration_s: float,
        ttft_s: float | None,
    ) -> None:
        status_text = _STATUS_TEXT.get(status) or str(status)
        self.requests.inc((model, replica, status_text))
        if technical:
            self.success.inc((model, replica, "technical"))
            if functional:
                self.success.inc((model, replica, "functional"))
                if quality:
                    self.success.inc((model, replica, "quality"))
        self.duration.observe((model,), duration_s)
        if ttft_s is not None:
            self.ttft.observe((model,), ttft_s)
