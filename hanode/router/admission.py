"""The admission gate in front of the relays: per model, requests in service at most this
router's share of capacity; the rest wait in bounded per-class queues, move to a fallback
model, or are shed with Retry-After (docs/degradation.md).

Thin glue over the pure policies: capacity and queues (:mod:`hanode.policies.admission`),
degradation with hysteresis (:mod:`hanode.policies.degradation`) and SLO series
(:mod:`hanode.policies.burn_rate`). Waiters are let through when a request ends, when the pool
snapshot changes and on a short poll while anything waits; a waiter whose client disconnects
leaves its queue at once (the responder's abort callback). Times come from the loop's clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from hanode.events import EventLog
from hanode.http.errors import send_error
from hanode.http.responder import Responder
from hanode.metrics.admission import AdmissionMetrics
from hanode.metrics.registry import NodeMetrics
from hanode.policies.admission import (
    ClassQueues,
    Waiting,
    class_limit,
    model_capacity,
    pressure,
    relative_loads,
    router_share,
)
from hanode.policies.burn_rate import ALERT_PAIRS, SloReport, SloSeries
from hanode.policies.classes import RequestClass
from hanode.policies.degradation import DegradeState, degrade
from hanode.pool.snapshot import PoolSnapshot, PoolView
from hanode.router.admission_config import AdmissionConfig

log = structlog.get_logger("hanode.admission")

POLL_S = 0.25  # while requests wait: how often capacity is checked again at the latest
AVAILABILITY_S = 10.0  # how often each model's availability is sampled for the SLOs
MEMORY_MARK = 0.90  # GPU memory use from which a replica counts as under memory pressure
MAX_RETRY_AFTER_S = 60

# (model to serve, fell back) -> None: the request goes on to a relay.
Start = Callable[[str, bool], None]


@dataclass(slots=True)
class Pending:
    request_class: RequestClass
    key: str
    model: str
    start: Start
    responder: Responder


class ModelGate:
    """One model's admission state on this router."""

    __slots__ = (
        "avg_s",
        "by_class",
        "cached",
        "degrade",
        "in_service",
        "memory_share",
        "name",
        "queues",
        "routers",
        "share",
    )

    def __init__(self, name: str, config: AdmissionConfig) -> None:
        classes = config.classes
        self.name = name
        self.queues: ClassQueues[Pending] = ClassQueues(
            {c: k.priority for c, k in classes.items()},
            {c: k.max_queue for c, k in classes.items()},
        )
        self.in_service = 0
        self.by_class: dict[str, int] = dict.fromkeys(classes, 0)  # in service per class
        self.degrade = DegradeState(config.model(name).degrade)
        self.cached: PoolSnapshot | None = None
        self.routers = 0
        self.share = 0
        self.memory_share = 0.0
        self.avg_s = 1.0  # moving average of request durations (for Retry-After)


class AdmissionGate:
    def __init__(
        self,
        view: PoolView,
        config: AdmissionConfig,
        loop: asyncio.AbstractEventLoop,
        metrics: NodeMetrics,
        events: EventLog | None = None,
        no_replica_retry_after_s: float = 2.0,
    ) -> None:
        self.view = view
        self.no_replica_retry_after_s = no_replica_retry_after_s
        self.config = config
        self.loop = loop
        self.metrics = metrics
        self.stats: AdmissionMetrics = metrics.admission
        self.events = events
        self.routers = 1  # live routers sharing the capacity (the cluster sets it)
        # A data-plane worker forwards each SLO record (model, class, ok, duration) to its
        # node, which keeps the node's SLO series (hanode.workers).
        self.slo_sink: Callable[[tuple[str, str, bool, float]], None] | None = None
        self._models: dict[str, ModelGate] = {}
        self._slo: dict[tuple[str, str], SloSeries] = {}
        # (model, class) burning its error budget fast (5m and 1h above 14.4x): the class may
        # hold the whole share, not only its capacity_share (refreshed by the sampler).
        self.burning: set[tuple[str, str]] = set()
        self._tick: asyncio.TimerHandle | None = None
        self._children: dict[tuple[object, ...], Any] = {}  # cached counter label children
        self._sampler: asyncio.TimerHandle | None = loop.call_later(0, self._sample)
        metrics.admission.watch(self._facts)

    def _inc(self, counter: Any, *labels: str) -> None:
        """``counter.labels(*labels).inc()`` with the child cached (on every request)."""
        key = (id(counter), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = counter.labels(*labels)
        child.inc()

    # -- capacity ------------------------------------------------------------------------------
    def gate(self, model: str) -> ModelGate:
        mg = self._models.get(model)
        if mg is None:
            mg = self._models[model] = ModelGate(model, self.config)
        return mg

    def share(self, mg: ModelGate) -> int:
        snap = self.view.snapshot
        if mg.cached is not snap or mg.routers != self.routers:
            mg.cached = snap
            mg.routers = self.routers
            route = snap.routes.get(mg.name)
            limit = self.config.model(mg.name).max_concurrency or self.config.max_concurrency
            rows = []
            pressed = 0
            if route is not None:
                for name, weight in zip(route.names, route.weights, strict=True):
                    state = snap.replicas.get(name)
                    if state is None:
                        continue
                    obs = state.observation
                    rows.append((weight, limit, obs.kv_usage, obs.queue_depth, obs.running))
                    if obs.gpu_mem_frac is not None and obs.gpu_mem_frac >= MEMORY_MARK:
                        pressed += 1
            loads = relative_loads(rows)
            mg.share = router_share(model_capacity(loads), self.routers)
            mg.memory_share = pressed / len(loads) if loads else 0.0
        return mg.share

    def set_routers(self, routers: int) -> None:
        """The number of live routers changed (from the replicated state): new shares."""
        routers = max(1, routers)
        if routers != self.routers:
            self.routers = routers
            self.pool_changed()

    # -- the request path ----------------------------------------------------------------------
    def degrade_request(self, model: str, cls: RequestClass, body: dict[str, Any]) -> list[str]:
        """Apply the model's engaged policies to a request of a class that may be degraded;
        raises PromptTooLong. Returns the policies that changed it."""
        if not self.config.enabled:
            return []
        mg = self.gate(model)
        self._update_pressure(mg)
        if not cls.degrade or not mg.degrade.engaged:
            return []
        applied = degrade(mg.degrade, body)
        for policy in applied:
            self._inc(self.stats.degraded, model, policy)
        return applied

    def submit(
        self, model: str, cls: RequestClass, key: str, start: Start, responder: Responder
    ) -> None:
        """Admit now, move to a fallback, queue, or refuse."""
        if not self.config.enabled:
            start(model, False)
            return
        mg = self.gate(model)
        share = self.share(mg)
        pending = Pending(cls, key, model, start, responder)
        queues = mg.queues
        head = queues.head_priority()
        if self._room(mg, cls, share) and (head is None or head > queues.rank(cls.name)):
            self._admit(mg, pending, fell_back=False)
        elif self._try_fallback(pending):
            pass
        elif share <= 0:
            self._refuse_unserved(pending)
        else:
            now = self.loop.time()
            entry = queues.push(pending, cls.name, key, now, cls.queue_timeout_s)
            if entry is None:
                self._shed(mg, pending, "full", f"the {cls.name} queue of model '{model}' is full")
            else:
                self._inc(self.stats.outcomes, model, cls.name, "queued")
                responder.on_abort(lambda: self._left(mg, entry))
                self._arm()
        self._update_pressure(mg)

    def release(self, model: str, cls: RequestClass, duration_s: float) -> None:
        """A request admitted for ``model`` ended: its place goes to the next waiter."""
        mg = self._models.get(model)
        if mg is None:
            return
        mg.in_service = max(0, mg.in_service - 1)
        mg.by_class[cls.name] = max(0, mg.by_class.get(cls.name, 0) - 1)
        mg.avg_s += (duration_s - mg.avg_s) * 0.1
        self._drain(mg)
        self._update_pressure(mg)

    def record(
        self, model: str, cls: RequestClass, status: int, ok: bool, duration_s: float
    ) -> None:
        """A request's end, for its model's and class's SLO (client errors are not counted)."""
        if 400 <= status < 500 and status != 429:
            return
        self._record_series(model, cls, ok, duration_s)
        self._inc(self.stats.class_requests, model, cls.name)
        if not ok:
            self._inc(self.stats.class_failures, model, cls.name)
        if self.slo_sink is not None:
            self.slo_sink((model, cls.name, ok, duration_s))

    def record_slo(self, model: str, class_name: str, ok: bool, duration_s: float) -> None:
        """A request a data-plane worker ended, for the node's SLO series (the worker counted
        it in its own metrics already)."""
        cls = self.config.classes.get(class_name)
        if cls is not None:
            self._record_series(model, cls, ok, duration_s)

    def _record_series(self, model: str, cls: RequestClass, ok: bool, duration_s: float) -> None:
        self._series(model, cls).record(self.loop.time(), ok, duration_s if ok else None)

    def pool_changed(self) -> None:
        for mg in list(self._models.values()):
            self._drain(mg)
            self._update_pressure(mg)

    # -- internals -----------------------------------------------------------------------------
    def _room(self, mg: ModelGate, cls: RequestClass, share: int) -> bool:
        """A place for one more request of ``cls``: below the share, and the class below its
        part of it."""
        if mg.in_service >= share:
            return False
        return mg.by_class.get(cls.name, 0) < self._class_limit(mg, cls, share)

    def _class_limit(self, mg: ModelGate, cls: RequestClass, share: int) -> int:
        lifted = (mg.name, cls.name) in self.burning
        return class_limit(share, 1.0 if lifted else cls.capacity_share)

    def _admit(self, mg: ModelGate, pending: Pending, *, fell_back: bool) -> None:
        mg.in_service += 1
        name = pending.request_class.name
        mg.by_class[name] = mg.by_class.get(name, 0) + 1
        outcome = "fallback" if fell_back else "admitted"
        self._inc(self.stats.outcomes, pending.model, pending.request_class.name, outcome)
        pending.start(mg.name, fell_back)

    def _try_fallback(self, pending: Pending) -> bool:
        """Send to the first fallback model with a free place, if the class allows it."""
        if not pending.request_class.fallback:
            return False
        for name in self.config.model(pending.model).fallback:
            fb = self.gate(name)
            share = self.share(fb)
            if self._room(fb, pending.request_class, share) and not len(fb.queues):
                self._admit(fb, pending, fell_back=True)
                self._update_pressure(fb)
                return True
        return False

    def _drain(self, mg: ModelGate) -> None:
        share = self.share(mg)
        queues = mg.queues
        classes = self.config.classes

        def eligible(name: str) -> bool:
            return mg.by_class.get(name, 0) < self._class_limit(mg, classes[name], share)

        while len(queues) and mg.in_service < share:
            entry = queues.pop(eligible)
            if entry is None:
                break
            self._admit(mg, entry.item, fell_back=False)
        if share <= 0 and len(queues):
            # No serving replica is left: fallback where allowed, 503 for the rest at once.
            while (entry := queues.pop()) is not None:
                if not self._try_fallback(entry.item):
                    self._refuse_unserved(entry.item)
        # Requests that could wait for a fallback model's place are not moved later: a queued
        # request keeps its place in its own model's queue.

    def _left(self, mg: ModelGate, entry: Waiting[Pending]) -> None:
        if entry.gone:
            return  # admitted already (the relay handles its own abort) or answered
        mg.queues.remove(entry)
        self._inc(self.stats.outcomes, mg.name, entry.request_class, "client_gone")
        self._update_pressure(mg)

    def _retry_after(self, mg: ModelGate) -> float:
        share = max(1, mg.share)
        wait = (len(mg.queues) + 1) / share * mg.avg_s
        return float(min(MAX_RETRY_AFTER_S, max(1, math.ceil(wait))))

    def _shed(self, mg: ModelGate, pending: Pending, why: str, message: str) -> None:
        cls = pending.request_class
        self._inc(self.stats.outcomes, pending.model, cls.name, why)
        send_error(
            pending.responder,
            429,
            message,
            code="rate_limit_exceeded",
            retry_after=self._retry_after(mg),
        )
        self._count(pending, 429)

    def _refuse_unserved(self, pending: Pending) -> None:
        cls = pending.request_class
        self._inc(self.stats.outcomes, pending.model, cls.name, "no_replica")
        self.metrics.no_replica.labels(pending.model).inc()
        send_error(
            pending.responder,
            503,
            f"no healthy replica of model '{pending.model}' is available",
            retry_after=self.no_replica_retry_after_s,
        )
        self._count(pending, 503)

    def _count(self, pending: Pending, status: int) -> None:
        self.metrics.observe_request(pending.model, "-", status, False, False, False, 0.0, None)
        self.record(pending.model, pending.request_class, status, False, 0.0)

    def _update_pressure(self, mg: ModelGate) -> None:
        share = self.share(mg)
        p = pressure(mg.in_service, len(mg.queues), share, mg.memory_share)
        for change in mg.degrade.update(p):
            state = "engaged" if change.engaged else "released"
            self._inc(self.stats.changes, mg.name, change.policy, state)
            shown = "inf" if math.isinf(p) else f"{p:.2f}"
            message = f"degradation {change.policy} {state} at pressure {shown}"
            if self.events is not None:
                self.events.add(
                    "degradation",
                    mg.name,
                    message,
                    policy=change.policy,
                    engaged=change.engaged,
                    pressure=p if math.isfinite(p) else -1.0,
                )
            else:
                log.info("degradation", model=mg.name, detail=message)

    def _arm(self) -> None:
        if self._tick is not None:
            return
        when = self.loop.time() + POLL_S
        for mg in self._models.values():
            deadline = mg.queues.next_deadline()
            if deadline is not None:
                when = min(when, deadline)
        self._tick = self.loop.call_at(when, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        now = self.loop.time()
        waiting = False
        for mg in list(self._models.values()):
            for entry in mg.queues.expired(now):
                cls = entry.item.request_class
                self._shed(
                    mg,
                    entry.item,
                    "timeout",
                    f"model '{mg.name}' had no capacity for this {cls.name} request within its "
                    f"queue_timeout_s of {cls.queue_timeout_s:g}s",
                )
            self._drain(mg)
            self._update_pressure(mg)
            waiting = waiting or bool(len(mg.queues))
        if waiting:
            self._arm()

    def _series(self, model: str, cls: RequestClass) -> SloSeries:
        series = self._slo.get((model, cls.name))
        if series is None:
            series = self._slo[(model, cls.name)] = SloSeries(cls.availability_target)
        return series

    def _sample(self) -> None:
        self._sampler = self.loop.call_later(AVAILABILITY_S, self._sample)
        now = self.loop.time()
        snap = self.view.snapshot
        for model in snap.models:
            serving = self.share(self.gate(model)) > 0
            for cls in self.config.classes.values():
                self._series(model, cls).sample_availability(now, serving)
        self.refresh_burning(now)

    def refresh_burning(self, now: float) -> None:
        """Which classes burn their budget fast now (the first alert pair of burn_rate)."""
        short, long, factor = ALERT_PAIRS[0]
        self.burning = {
            key
            for key, series in self._slo.items()
            if series.burn(now, short) > factor and series.burn(now, long) > factor
        }

    def slo_reports(self) -> list[SloReport]:
        now = self.loop.time()
        return [s.report(m, c, now) for (m, c), s in sorted(self._slo.items())]

    def _facts(self) -> dict[str, Any]:
        """What the metrics collector exports (plain data: metrics sit below the router)."""
        models = {}
        for name, mg in self._models.items():
            models[name] = {
                "share": mg.share,
                "in_service": mg.in_service,
                "pressure": mg.degrade.pressure,
                "engaged": {p: p in mg.degrade.engaged for p in mg.degrade.config.enabled()},
                "queued": {c: mg.queues.length(c) for c in self.config.classes},
                "queue_max": dict(mg.queues.max_seen),
            }
        return {"models": models, "slo": self.slo_reports()}

    def close(self) -> None:
        for handle in (self._tick, self._sampler):
            if handle is not None:
                handle.cancel()
        self._tick = self._sampler = None
