"""`hanode run`: wire configuration, pool, health checkers, front door and ops endpoint.

This module only assembles parts; each part's behaviour lives in its own package.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import orjson
import structlog

from hanode.config import Config
from hanode.engines.registry import get_adapter
from hanode.events import EventLog
from hanode.gpu.nvml import GpuMemoryReader
from hanode.health.checker import GpuMarks, HealthSettings, ReplicaChecker
from hanode.health.passive import PassiveStats
from hanode.http.server import HttpServer, ServerLimits
from hanode.metrics.endpoint import OpsEndpoint
from hanode.metrics.registry import NodeMetrics
from hanode.policies.breaker import BreakerConfig
from hanode.policies.l3 import L3Thresholds
from hanode.policies.retry import RetryPolicy
from hanode.policies.weights import WeightThresholds
from hanode.pool.local import LocalPool
from hanode.router.frontdoor import FrontDoor, RouterSettings
from hanode.router.validation import RequestLimits
from hanode.runtime import stop_on_signals
from hanode.status import status_document

log = structlog.get_logger("hanode.daemon")


def router_settings(config: Config) -> RouterSettings:
    r = config.router
    retry = config.retry
    b = config.breaker
    return RouterSettings(
        api_keys=r.api_keys,
        limits=RequestLimits(max_tokens=r.max_tokens_limit, max_n=r.max_n),
        request_timeout_s=r.request_timeout_s,
        connect_timeout_s=r.connect_timeout_s,
        retry=RetryPolicy(
            max_attempts=retry.max_attempts,
            per_try_timeout_s=retry.per_try_timeout_s,
            base_backoff_s=retry.backoff_base_s,
            cap_backoff_s=retry.backoff_cap_s,
        ),
        retry_budget_ratio=retry.budget_ratio,
        retry_budget_min_per_s=retry.budget_min_per_s,
        slo_latency_s=config.slo.latency_ms / 1000.0,
        slo_ttft_s=config.slo.ttft_ms / 1000.0,
        breaker=BreakerConfig(
            consecutive_failures=b.consecutive_failures,
            timeout_trip_count=b.timeout_trip_count,
            oom_trip_count=b.oom_trip_count,
            oom_window_s=b.oom_window_s,
            oom_weight_cut=b.oom_weight_cut,
            oom_recovery_s=b.oom_recovery_s,
            busy_backoff_s=b.busy_backoff_s,
            default_retry_after_s=b.default_retry_after_s,
            max_pause_s=b.max_pause_s,
            open_base_s=b.open_base_s,
            open_max_s=b.open_max_s,
            half_open_probes=b.half_open_probes,
        ),
    )


def server_limits(config: Config) -> ServerLimits:
    r = config.router
    return ServerLimits(
        max_header_bytes=r.max_header_bytes,
        max_body_bytes=r.max_body_bytes,
        header_timeout_s=r.header_timeout_s,
        idle_timeout_s=r.idle_timeout_s,
        max_connections=r.max_connections,
    )


class Node:
    """One running hanode node (single-node pool for now)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        t = config.thresholds
        self.metrics = NodeMetrics()
        self.events = EventLog()
        self.passive = PassiveStats(config.health.passive_window_s)
        self.pool = LocalPool(
            config.replicas,
            WeightThresholds(
                gpu_mem_prepare=t.gpu_mem_prepare,
                gpu_mem_reduce=t.gpu_mem_reduce,
                gpu_mem_remove=t.gpu_mem_remove,
            ),
        )
        self.gpu = GpuMemoryReader()
        self.stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._servers: list[HttpServer] = []
        self.door: FrontDoor | None = None

    def status(self) -> dict[str, Any]:
        door = self.door
        loop = asyncio.get_running_loop()
        return status_document(
            self.config.node.name,
            self.pool.snapshot,
            door.table.breakers if door else {},
            door.inflight if door else {},
            self.events,
            loop.time(),
        )

    async def start(self) -> None:
        config = self.config
        h = config.health
        t = config.thresholds
        self.door = FrontDoor(
            self.pool, router_settings(config), self.metrics, self.passive, self.events
        )
        door = self.door
        self.metrics.watch_pool(lambda: self.pool.snapshot, lambda: dict(door.inflight))

        def on_error(exc: Exception) -> None:
            log.error("handler_error", error=repr(exc))

        router = HttpServer(door.handle, server_limits(config), on_error)
        host, port = await router.listen(config.router.listen.host, config.router.listen.port)
        self._servers.append(router)
        ops = OpsEndpoint(
            self.metrics,
            self.status,
            lambda after, limit: [e.as_dict() for e in self.events.recent(limit, after)],
        )
        ops_server = HttpServer(ops.handle, ServerLimits(max_body_bytes=64 * 1024), on_error)
        mhost, mport = await ops_server.listen(
            config.metrics.listen.host, config.metrics.listen.port
        )
        self._servers.append(ops_server)
        settings = HealthSettings(
            interval_s=h.interval_s,
            timeout_s=h.timeout_s,
            rise=h.rise,
            fall=h.fall,
            l2_interval_s=h.l2_interval_s,
            l2_timeout_s=h.l2_timeout_s,
            l2_prompt=h.l2_prompt,
            l2_max_tokens=h.l2_max_tokens,
        )
        l3 = L3Thresholds(
            latency_ms=t.latency_ms,
            ttft_ms=t.ttft_ms,
            kv_usage=t.kv_usage,
            queue_depth=t.queue_depth,
            gpu_mem=t.gpu_mem_reduce,
        )
        marks = GpuMarks(t.gpu_mem_prepare, t.gpu_mem_reduce, t.gpu_mem_remove, t.gpu_mem_recover)
        for spec in config.replicas:
            checker = ReplicaChecker(
                spec,
                get_adapter(spec.engine),
                settings,
                l3,
                marks,
                self.pool,
                self.passive,
                self.gpu,
                self.events,
                self.metrics,
            )
            self._tasks.append(asyncio.create_task(checker.run(self.stop)))
        log.info(
            "node_started",
            node=config.node.name,
            router=f"{host}:{port}",
            metrics=f"{mhost}:{mport}",
            replicas=len(config.replicas),
        )
        # One machine-readable line on stdout for scripts and tests that start us.
        sys.stdout.write(
            orjson.dumps(
                {"event": "listening", "router_port": port, "metrics_port": mport}
            ).decode()
            + "\n"
        )
        sys.stdout.flush()

    async def close(self) -> None:
        self.stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for server in self._servers:
            await server.close()
        if self.door is not None:
            self.door.close()
        self.gpu.close()


async def run_node(config: Config) -> int:
    node = Node(config)
    stop_on_signals(node.stop)
    await node.start()
    await node.stop.wait()
    log.info("node_stopping", node=config.node.name)
    await node.close()
    return 0
