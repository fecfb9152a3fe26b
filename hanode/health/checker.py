"""The per-replica health loop: probes -> debounced layers -> one Observation for the pool.

- L1 (process) every interval; a failure forces L2 to be proven again, since a restarted
  engine reloads its model.
- L2 (model completes a test prompt) only when needed: at start and while not ready, after real
  traffic failed, and after a quiet period with no useful real traffic. Test prompts cost GPU.
- L3 (performance) from the engine's metrics page, NVML and the router's passive statistics;
  it lowers weight, never removes (GPU memory pressure past the remove mark is the one
  exception). TTFT and TPOT are judged against the model's pool (``peers``); the engine's own
  TTFT/TPOT histograms fill in where traffic has not said (an idle replica, whole answers).
- GPU memory: pressure (KV use inside the reservation for engines that reserve, device used
  otherwise) drives the prepare/reduce/remove gate; device memory grown past the baseline
  learned once the replica serves is a separate signal with its own event (``gpu_growth``).
Rise/fall counts keep one blip from flapping a replica. docs/health-signals.md has the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Protocol

import structlog

from hanode.engines.adapter import CHAT_PATH, COMPLETIONS_PATH, is_chat_path
from hanode.engines.base import EngineAdapter, EngineMetrics
from hanode.engines.prom_text import Buckets, Quantile, histogram_bucket
from hanode.events import EventLog
from hanode.gpu.nvml import GpuMemoryReader
from hanode.health.passive import PassiveStats
from hanode.health.probes import ProbeResult, probe_l1, probe_l2, scrape_metrics
from hanode.metrics.registry import NodeMetrics
from hanode.policies.gpu_gate import GpuLevel, GpuMemoryGate
from hanode.policies.l3 import L3Thresholds, evaluate_l3
from hanode.policies.latency import Figure, PoolLatency, figure, is_reference, pool_latency
from hanode.policies.level import combine_level
from hanode.policies.memory import (
    GrowthChange,
    GrowthWatch,
    PressureSource,
    memory_pressure,
    reserving,
)
from hanode.policies.rise_fall import RiseFall
from hanode.pool.replica import HealthLevel, Observation, ReplicaSpec
from hanode.pool.snapshot import PoolView

log = structlog.get_logger("hanode.health")

_SOURCE = {
    PressureSource.KV: "KV cache in the reservation",
    PressureSource.DEVICE: "device memory used",
}


class ObservationSink(Protocol):
    """Where observations go: the local pool, or the cluster agent."""

    def observe(self, name: str, obs: Observation) -> None: ...


@dataclass(frozen=True, slots=True)
class HealthSettings:
    interval_s: float = 1.0
    timeout_s: float = 2.0
    rise: int = 2
    fall: int = 2
    l2_interval_s: float = 60.0
    l2_timeout_s: float = 15.0
    l2_prompt: str = "Say OK."
    l2_max_tokens: int = 4


@dataclass(frozen=True, slots=True)
class GpuMarks:
    """GPU memory marks for the gate; no defaults: built from [thresholds] (hanode.settings)."""

    prepare: float
    reduce: float
    remove: float
    recover: float


def _round(value: float | None, digits: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def _floor(value: float | None, digits: int) -> float | None:
    """Rounded down: a lower bound must stay one."""
    if value is None or not math.isfinite(value):
        return None
    return math.floor(value * 10.0**digits) / 10.0**digits


def _ceil(value: float | None, digits: int) -> float | None:
    """Rounded up (an upper bound); ``None`` for ``inf``, the +Inf bucket's "unbounded"."""
    if value is None or not math.isfinite(value):
        return None
    return math.ceil(value * 10.0**digits) / 10.0**digits


class EngineLatency:
    """The engine's own TTFT/TPOT (ms) from its histograms: the observations made since the
    last scrape, or all of them since it started when there were none (an idle replica). The
    median comes with its bucket's edges: it is only known to lie between them."""

    __slots__ = ("_prev",)

    def __init__(self) -> None:
        self._prev: Buckets | None = None

    def median_ms(self, buckets: Buckets | None) -> Quantile | None:
        if buckets is None:
            return None
        recent = histogram_bucket(self._prev, buckets, 0.5)
        self._prev = buckets
        found = recent if recent is not None else histogram_bucket(None, buckets, 0.5)
        if found is None or not math.isfinite(found.value):
            return None  # no observations at all
        return Quantile(found.value * 1000.0, found.lo * 1000.0, found.hi * 1000.0)


def _from_histogram(found: Quantile | None) -> Figure | None:
    return Figure(found.value, found.lo, found.hi, exact=False) if found is not None else None


def _bounds(fig: Figure | None, digits: int) -> tuple[float | None, float | None]:
    """The observation's ``*_lo_ms``/``*_hi_ms``: set only for a histogram figure (the lower
    edge rounded down, the upper one up; ``None`` for the +Inf bucket's unbounded top)."""
    if fig is None or fig.exact:
        return None, None
    lo = _floor(fig.lo, digits)
    return (lo if lo is not None else 0.0), _ceil(fig.hi, digits)


class EngineRate:
    """Time per token (ms) from an engine's counters (llama.cpp): generation seconds over tokens
    since the last scrape, or since the engine started when none were generated since."""

    __slots__ = ("_prev",)

    def __init__(self) -> None:
        self._prev: tuple[float, float] | None = None

    def per_token_ms(self, totals: tuple[float, float] | None) -> float | None:
        if totals is None:
            return None
        seconds, tokens = totals
        prev, self._prev = self._prev, totals
        if prev is not None and tokens > prev[1] and seconds >= prev[0]:
            return (seconds - prev[0]) / (tokens - prev[1]) * 1000.0
        return seconds / tokens * 1000.0 if tokens > 0 else None


class ReplicaChecker:
    def __init__(
        self,
        spec: ReplicaSpec,
        adapter: EngineAdapter,
        settings: HealthSettings,
        l3: L3Thresholds,
        gpu_marks: GpuMarks,
        pool: ObservationSink,
        passive: PassiveStats,
        gpu_reader: GpuMemoryReader,
        events: EventLog,
        metrics: NodeMetrics,
        peers: PoolView | None = None,
        growth: GrowthWatch | None = None,
        l2_path: str | None = None,
    ) -> None:
        """``peers``: the pool whose medians TTFT/TPOT are judged against; ``growth``: the
        device's growth watch, shared by every replica on the same GPU (one of its own when
        not given); ``l2_path``: [[replicas]] ``l2_path``, else the engine's default."""
        self.spec = spec
        self.adapter = adapter
        self.settings = settings
        self.l3_thresholds = l3
        self.pool = pool
        self.passive = passive
        self.gpu_reader = gpu_reader
        self.events = events
        self.metrics = metrics
        self.l1 = RiseFall(settings.rise, settings.fall, up=False)
        self.l2 = RiseFall(1, settings.fall, up=False)
        self.l3 = RiseFall(settings.rise, settings.fall, up=True)
        self.gate = GpuMemoryGate(
            gpu_marks.prepare, gpu_marks.reduce, gpu_marks.remove, gpu_marks.recover
        )
        self.peers = peers
        self.growth = (
            growth if growth is not None else GrowthWatch(l3.gpu_growth, frozenset({spec.name}))
        )
        self.l2_path = l2_path
        self._l2_configured = l2_path is not None
        self._engine_ttft = EngineLatency()
        self._engine_tpot = EngineLatency()
        self._engine_rate = EngineRate()
        self.level = HealthLevel.DOWN
        self._checks = 0
        self._last_l2 = -math.inf
        self._l2_detail = "not checked yet"
        self._l1_detail = "not checked yet"

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.check_once()
            except Exception:  # a probe bug must not end health checking for good
                log.exception("health_check_failed", replica=self.spec.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval_s)

    def _l2_due(self, now: float) -> bool:
        if not self.l2.up:
            return True
        name = self.spec.name
        if self.passive.failed_since(name, self._last_l2):
            return True
        last_useful = max(self._last_l2, self.passive.last_success(name) or -math.inf)
        return now - last_useful >= self.settings.l2_interval_s

    async def _probe_l2(self) -> ProbeResult:
        """The test prompt. Without a configured path, a server that has no such endpoint
        (404/405) is tried on the other one (chat <-> completions), which is then kept."""
        s, spec = self.settings, self.spec
        result = await probe_l2(
            spec.url,
            self.adapter,
            spec.model,
            s.l2_prompt,
            s.l2_max_tokens,
            s.l2_timeout_s,
            path=self.l2_path,
        )
        if result.status not in (404, 405) or self._l2_configured:
            return result
        current, _ = self.adapter.l2_request(spec.model, "", 1, self.l2_path)
        other = COMPLETIONS_PATH if is_chat_path(current) else CHAT_PATH
        retry = await probe_l2(
            spec.url,
            self.adapter,
            spec.model,
            s.l2_prompt,
            s.l2_max_tokens,
            s.l2_timeout_s,
            path=other,
        )
        if retry.status not in (404, 405):
            log.info("l2_path_learned", replica=spec.name, path=other, instead_of=current)
            self.l2_path = other
            return retry
        return result

    def relearn_memory_baseline(self) -> None:
        """The replica's process reloaded or woke: learn its device's memory baseline again
        (for the sleep/wake work; stopping to serve relearns by itself)."""
        self.growth.relearn()

    def _pool_latency(self, own: Observation) -> PoolLatency | None:
        """Medians of the model's reference replicas, this one counted with its new figures."""
        if self.peers is None:
            return None
        spec = self.spec
        mine = [own] if own.level.serving else []
        others = [
            r.observation
            for name, r in self.peers.snapshot.replicas.items()
            if name != spec.name
            and r.spec.model == spec.model
            and is_reference(r.role, r.admin, r.observation)
        ]
        return pool_latency(mine + others)

    async def check_once(self) -> Observation:
        s = self.settings
        spec = self.spec
        loop = asyncio.get_running_loop()
        r1 = await probe_l1(spec.url, self.adapter, s.timeout_s)
        self._l1_detail = r1.detail
        l1_up = self.l1.record(r1.ok)
        engine: EngineMetrics | None = None
        if not l1_up:
            self.l2.force(False)
            self._l2_detail = "process not answering"
        else:
            now = loop.time()
            if self._l2_due(now):
                r2 = await self._probe_l2()
                self._last_l2 = loop.time()
                self.l2.record(r2.ok)
                self._l2_detail = r2.detail
            engine = await scrape_metrics(spec.url, self.adapter, s.timeout_s)
        now = loop.time()
        device = None
        if spec.gpu is not None:  # NVML calls block: keep them off the event loop
            device = await loop.run_in_executor(None, self.gpu_reader.read, spec.gpu)
        if device is None and engine is not None:
            device = engine.gpu_mem_frac
        reserves = reserving(
            self.adapter.reserves_memory, engine.reserved_frac if engine is not None else None
        )
        pressure, source = memory_pressure(
            reserves, engine.kv_usage if engine is not None else None, device
        )
        # Asleep, an engine has released its memory; its baseline is learned again once awake.
        asleep = engine is not None and engine.sleeping is True
        serving = l1_up and self.l2.up and not asleep
        growth, growth_change = self.growth.update(spec.name, device, serving)
        if growth_change is not None:
            self._growth_event(growth_change)
        traffic = self.passive.latency_ms(spec.name, now)
        ttft = figure(traffic.ttft_ms)
        tpot = figure(traffic.tpot_ms)
        if engine is not None:  # read every scrape, so "since the last one" stays true
            engine_ttft = _from_histogram(self._engine_ttft.median_ms(engine.ttft_buckets))
            engine_tpot = _from_histogram(self._engine_tpot.median_ms(engine.tpot_buckets))
            rate = figure(self._engine_rate.per_token_ms(engine.tpot_totals))  # a mean: exact
            engine_tpot = engine_tpot if engine_tpot is not None else rate
            # Traffic figures win while they are recent. Stale ones (a drained or idle replica:
            # the last few samples kept) give way to what the engine saw since, its test
            # prompts included, so a replica is not held slow for ever by old samples.
            if ttft is None or (not traffic.recent and engine_ttft is not None):
                ttft = engine_ttft
            if tpot is None or (not traffic.recent and engine_tpot is not None):
                tpot = engine_tpot
        ttft_lo, ttft_hi = _bounds(ttft, 2)
        tpot_lo, tpot_hi = _bounds(tpot, 3)
        gpu_level, previous = self.gate.update(pressure)
        if previous is not None:
            self._gpu_event(gpu_level, previous, pressure, source)
        measured = Observation(
            level=HealthLevel.HEALTHY if l1_up and self.l2.up else HealthLevel.DOWN,
            gpu_mem_frac=_round(pressure, 3),
            kv_usage=_round(engine.kv_usage, 3) if engine else None,
            queue_depth=engine.waiting if engine else None,
            running=engine.running if engine else None,
            latency_ms=_round(traffic.latency_ms, 2),
            ttft_ms=_round(ttft.value, 2) if ttft else None,
            tpot_ms=_round(tpot.value, 3) if tpot else None,
            ttft_lo_ms=ttft_lo,
            ttft_hi_ms=ttft_hi,
            tpot_lo_ms=tpot_lo,
            tpot_hi_ms=tpot_hi,
            gpu_growth=_round(growth, 3),
            gpu_removed=gpu_level is GpuLevel.REMOVE,
        )
        l3_in_range, l3_reason = evaluate_l3(
            measured, self.l3_thresholds, self._pool_latency(measured)
        )
        l3_ok = self.l3.record(l3_in_range)
        level = combine_level(l1_up, self.l2.up, l3_ok)
        if level is HealthLevel.DOWN:
            reason = f"L1: {self._l1_detail or 'not proven yet'}"
        elif level is HealthLevel.UNREADY:
            reason = f"L2: {self._l2_detail or 'not proven yet'}"
        elif level is HealthLevel.DEGRADED:
            reason = f"L3: {l3_reason or 'recovering'}"
        else:
            reason = ""
        if gpu_level is GpuLevel.REMOVE and pressure is not None:
            reason = (reason + "; " if reason else "") + (
                f"GPU memory pressure {pressure:.0%} ({_SOURCE[source]}): removed"
            )
        obs = dataclasses.replace(measured, level=level, reason=reason)
        self._checks += 1
        if level is HealthLevel.DOWN and r1.ok and self._checks < self.settings.rise:
            # Still proving itself after our own start: say nothing rather than "down", so a
            # restarting daemon does not mark its healthy replicas down for the whole cluster.
            return obs
        if level != self.level:
            self.events.add(
                "health",
                spec.name,
                f"{self.level.name} -> {level.name}" + (f": {reason}" if reason else ""),
                model=spec.model,
                from_level=self.level.name,
                to_level=level.name,
            )
            self.metrics.health_transitions.labels(spec.name, level.name).inc()
            self.level = level
        self.pool.observe(spec.name, obs)
        return obs

    def _growth_event(self, change: GrowthChange) -> None:
        if change.raised:
            message = (
                f"device memory grew {change.growth:.1%} of the GPU past its baseline "
                f"({change.baseline:.0%}): beyond the engine's reservation, OOM risk"
            )
        else:
            message = "device memory back within its baseline"
        self.events.add(
            "gpu_growth",
            self.spec.name,
            message,
            raised=change.raised,
            growth=round(change.growth, 4),
            baseline=round(change.baseline, 4),
            gpu=self.spec.gpu,
        )

    def _gpu_event(
        self, level: GpuLevel, previous: GpuLevel, frac: float | None, source: PressureSource
    ) -> None:
        what = {
            GpuLevel.NORMAL: "back to normal",
            GpuLevel.PREPARE: "prepare capacity",
            GpuLevel.REDUCE: "traffic reduced",
            GpuLevel.REMOVE: "removed from the pool",
        }[level]
        pct = f"{frac:.0%}" if frac is not None else "unknown"
        self.events.add(
            "gpu_memory",
            self.spec.name,
            f"GPU memory pressure {pct} ({_SOURCE[source]}): {what}",
            level=level.value,
            previous=previous.value,
            source=source.value,
        )
        self.metrics.gpu_events.labels(self.spec.name, level.value).inc()
