"""What every relay needs, below the HTTP front door: the router's shared state and services.

:class:`RouterCore` owns the replica registry, the routing table and the retry budget; it picks
a replica for a try, counts breaker transitions (and tells the cluster of local opens), and
keeps the tries in flight per replica, so that when a replica is known dead (its breaker opens,
or a new snapshot takes it out of routing) the tries waiting on it are failed over at once
instead of waiting out the per-try timeout: O(tries on that replica).

The front door (:mod:`hanode.router.frontdoor`) dispatches HTTP and starts relays on it; the
relay (:mod:`hanode.router.relay`) uses it and never the front door.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from hanode.events import EventLog
from hanode.http.errors import send_error
from hanode.http.responder import Responder
from hanode.metrics.registry import NodeMetrics
from hanode.policies.affinity import ranking
from hanode.policies.breaker import BreakerConfig, BreakerState, ReplicaBreaker, Transition
from hanode.policies.failure import FailureClass
from hanode.policies.hedge import FirstByteWindow, hedges
from hanode.policies.picker import pick
from hanode.policies.retry import RetryBudget, RetryPolicy
from hanode.pool.replica import may_serve
from hanode.pool.snapshot import PoolSnapshot, PoolView, ReplicaState
from hanode.router.admission import AdmissionGate
from hanode.router.admission_config import AdmissionConfig
from hanode.router.registry import Replica, ReplicaRegistry, Try
from hanode.router.routing_table import RoutingTable
from hanode.router.validation import RequestLimits

log = structlog.get_logger("hanode.router")

# While tries are in flight, how often the pool snapshot is checked for replicas taken out of
# routing (a pool owner may also call RouterCore.pool_changed at once).
POOL_WATCH_S = 0.25

# At most one log line per this many seconds about this router's own resources running out
# (it may hit every request; each line counts those since the last).
RESOURCE_LOG_EVERY_S = 10.0


class TrafficObserver(Protocol):
    """Passive health: what real traffic says about a replica (fed to the health checker)."""

    def record(
        self,
        replica: str,
        ok: bool,
        latency_s: float,
        ttft_s: float | None,
        now: float,
        tpot_s: float | None = None,
    ) -> None:
        """``ttft_s`` only for streamed answers; ``tpot_s`` when the output's tokens are known.
        ``ok=False`` also for a 2xx that was unusable (empty, cut, unparseable)."""


@dataclass(frozen=True, slots=True)
class RouterSettings:
    api_keys: tuple[str, ...] = ()
    limits: RequestLimits = field(default_factory=RequestLimits)
    request_timeout_s: float = 300.0
    model_timeouts: Mapping[str, float] = field(default_factory=dict)  # per-model defaults
    max_request_timeout_s: float = 3600.0
    # Silence allowed between two reads of a 2xx body once it has begun. 30 s: far above any
    # real inter-token gap (tens of ms; seconds under preemption), far below the 300 s
    # deadline that used to be the only bound on a stalled stream.
    stream_idle_timeout_s: float = 30.0
    # Mid-stream continuation (hanode.router.continuation): on by default, at most this many
    # continuations per stream.
    stream_continuation: bool = True
    stream_continuation_limit: int = 2
    # Hedged first tries (policies/hedge.py): "off", "unary", "streams" or "all".
    hedge: str = "off"
    connect_timeout_s: float = 2.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retry_budget_ratio: float = 0.2
    retry_budget_min_per_s: float = 3.0
    slo_latency_s: float = 10.0
    slo_ttft_s: float = 2.0
    no_replica_retry_after_s: float = 2.0
    pin_seeds: bool = True
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    # Classes, keys, capacity, queues, degradation, fallbacks (docs/degradation.md).
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)


class RouterCore:
    def __init__(
        self,
        view: PoolView,
        settings: RouterSettings,
        metrics: NodeMetrics,
        observer: TrafficObserver | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.view = view
        self.settings = settings
        self.metrics = metrics
        self.observer = observer
        self.events = events
        self._open_listeners: list[Callable[[str, str, float], None]] = []
        # (op, replica, failure class, until): breakers another router changed ("open") or an
        # operator reset ("reset"), applied here through peer_opened / reset_breaker.
        self._peer_listeners: list[Callable[[str, str, str, float], None]] = []
        self.registry = ReplicaRegistry(view, settings.breaker, settings.connect_timeout_s)
        self.inflight = self.registry.inflight  # name -> requests in flight (the picker's input)
        self.table = RoutingTable(
            view,
            self.registry,
            self.loop.time,
            on_reset=lambda replica, ts: self.breaker_changed(replica, ts, local=False),
        )
        self.budget = RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min_per_s)
        self._watched: PoolSnapshot = view.snapshot
        self._watch: asyncio.TimerHandle | None = None
        self._rand = random.random
        self._resource_errors = 0  # since the last log line about them
        self._resource_log_at = -math.inf  # no such line before this time
        self._first_bytes: dict[tuple[str, bool], FirstByteWindow] = {}  # (model, stream)
        self.admission = AdmissionGate(
            view,
            settings.admission,
            self.loop,
            metrics,
            events,
            no_replica_retry_after_s=settings.no_replica_retry_after_s,
        )

    # -- hedging -------------------------------------------------------------------------------
    def first_byte(self, model: str, stream: bool, seconds: float) -> None:
        """A try's time to its first byte (a 2xx head): the hedging window's input."""
        key = (model, stream)
        window = self._first_bytes.get(key)
        if window is None:
            window = self._first_bytes[key] = FirstByteWindow()
        window.add(seconds)

    def hedge_delay(self, model: str, stream: bool) -> float | None:
        """When to hedge a first try of this kind: the p95 time to first byte, or None."""
        if not hedges(self.settings.hedge, stream):
            return None
        window = self._first_bytes.get((model, stream))
        return window.p95() if window is not None else None

    # -- choosing ------------------------------------------------------------------------------
    def choose(
        self, model: str, now: float, exclude: str | None, session: str | None = None
    ) -> str | None:
        """Pick a replica whose breaker lets a request through, avoiding ``exclude`` if possible.

        ``allow()`` is asked of one replica at a time and only until one says yes: in
        HALF_OPEN a yes hands out the probe slot, which only the replica returned will use.
        A ``session`` goes to its first replica in rendezvous order (policies/affinity.py)."""
        table = self.table
        registry = self.registry
        route = table.route(model, now)
        if route is None or not route.names:
            return None
        if session is not None:
            order = ranking(route.names, route.weights, session)
            if exclude in order and len(order) > 1:
                order.remove(exclude)
                order.append(exclude)  # the failed one only when nothing else lets us in
            for pinned in order:
                if registry.get(pinned).breaker.allow(now):
                    return pinned
            return None
        inflight = self.inflight
        for _ in range(3):
            name = pick(route, inflight, self._rand, exclude)
            if name is None:
                return None
            if registry.get(name).breaker.allow(now):
                return name
            table.invalidate()
            route = table.route(model, now)
            if route is None or not route.names:
                return None
        others = sorted((n for n in route.names if n != exclude), key=lambda n: inflight.get(n, 0))
        for name in others:
            if registry.get(name).breaker.allow(now):
                return name
        if exclude in route.names and registry.get(exclude).breaker.allow(now):
            return exclude
        return None

    def rate_limit_pause_left(self, model: str, now: float) -> float | None:
        """Seconds until the first replica of ``model`` paused by a 429 may be tried again;
        None when none is paused (then the model has no replica to offer at all)."""
        route = self.table.route(model, now)
        if route is None:
            return None
        ends: list[float] = []
        for name in route.names:
            replica = self.registry.find(name)
            if replica is not None:
                until = replica.breaker.snapshot(now)["paused_until"]
                if isinstance(until, float):
                    ends.append(until)
        return min(ends) - now if ends else None

    def refuse(self, responder: Responder, model: str, now: float) -> int:
        """Answer a request no replica can take before its first try; returns the status sent.

        429 with the real wait when the model's replicas are only pausing after a 429 (the
        client should come back then), else 503."""
        pause = self.rate_limit_pause_left(model, now)
        if pause is not None:
            send_error(
                responder,
                429,
                f"every replica of model '{model}' is rate limited",
                code="rate_limit_exceeded",
                retry_after=pause,
            )
            return 429
        self.metrics.no_replica.labels(model).inc()
        send_error(
            responder,
            503,
            f"no healthy replica of model '{model}' is available",
            retry_after=self.settings.no_replica_retry_after_s,
        )
        return 503

    def out_of_resources(self, responder: Responder, detail: str) -> None:
        """This router could not make a connection for want of its own resources (file
        descriptors, local ports): 503 with Retry-After, loud (rate-limited) logs, and no word
        to any breaker or to the cluster: the replicas are not to blame."""
        now = self.loop.time()
        self._resource_errors += 1
        self.metrics.rejected.labels("out_of_resources").inc()
        if now >= self._resource_log_at:
            self._resource_log_at = now + RESOURCE_LOG_EVERY_S
            log.error(
                "router_out_of_resources",
                detail=detail,
                requests=self._resource_errors,
                hint="raise LimitNOFILE / ulimit -n, or check for leaked connections",
            )
            self._resource_errors = 0
        send_error(
            responder,
            503,
            f"this router is out of resources ({detail}); no replica is to blame, retry later",
            code="router_out_of_resources",
            retry_after=self.settings.no_replica_retry_after_s,
        )

    # -- tries in flight -----------------------------------------------------------------------
    def track(self, replica: Replica, relay: Try) -> None:
        """A try of ``relay`` is in flight on ``replica``."""
        inflight = self.inflight
        inflight[replica.name] = inflight.get(replica.name, 0) + 1
        replica.tries.add(relay)
        if self._watch is None:
            self._watch = self.loop.call_later(POOL_WATCH_S, self._watch_pool)

    def untrack(self, replica: Replica, relay: Try) -> None:
        inflight = self.inflight
        inflight[replica.name] = inflight.get(replica.name, 1) - 1
        replica.tries.discard(relay)

    def tries_on(self, replica: str) -> int:
        entry = self.registry.find(replica)
        return len(entry.tries) if entry is not None else 0

    def replica_dead(self, replica: str, why: str) -> None:
        """Fail over every try on ``replica`` that has not sent a byte to its client."""
        entry = self.registry.find(replica)
        if entry is not None and entry.tries:
            for relay in list(entry.tries):
                relay.replica_dead(why)

    def listen_breaker_opens(self, listener: Callable[[str, str, float], None]) -> None:
        """Call ``listener(replica, failure_class, until_monotonic)`` whenever this router opens
        a breaker on evidence about the replica itself (the cluster replicates those)."""
        self._open_listeners.append(listener)

    def listen_peer_breakers(self, listener: Callable[[str, str, str, float], None]) -> None:
        """Call ``listener(op, replica, failure_class, until)`` after each breaker change that
        came from elsewhere: ``"open"`` (peer_opened) or ``"reset"`` (reset_breaker). A node
        with data-plane workers mirrors them to every worker (hanode.workers)."""
        self._peer_listeners.append(listener)

    def peer_opened(self, replica: str, failure: FailureClass, until: float) -> None:
        """Another router opened ``replica``'s breaker until ``until`` (monotonic)."""
        now = self.loop.time()
        self.breaker_changed(
            replica, self.breaker(replica).force_open(now, failure, until), local=False
        )
        for listener in self._peer_listeners:
            listener("open", replica, failure.value, until)

    def reset_breaker(self, replica: str) -> None:
        """An operator reset ``replica``'s breaker (replicated by the cluster)."""
        now = self.loop.time()
        self.breaker_changed(replica, self.breaker(replica).reset(now), local=False)
        for listener in self._peer_listeners:
            listener("reset", replica, "", 0.0)

    def announce_open(self, replica: str, failure_class: str, until: float) -> None:
        """Tell the open listeners (the cluster) of an open decided in a data-plane worker of
        this node, as if this router had opened it."""
        for listener in self._open_listeners:
            listener(replica, failure_class, until)

    def pool_changed(self) -> None:
        """Fail over the tries on replicas that the current snapshot no longer lets serve.

        Run by a timer while tries are in flight; a pool owner may call it right after it
        publishes a snapshot."""
        snap = self._watched = self.view.snapshot
        self.admission.pool_changed()  # capacity may have changed: wake the queues
        for replica in [r for r in self.registry if r.tries]:
            why = no_longer_serving(snap.replicas.get(replica.name))
            if why is not None:
                self.replica_dead(replica.name, why)

    def _watch_pool(self) -> None:
        self._watch = None
        if self.view.snapshot is not self._watched:
            self.pool_changed()
        if any(r.tries for r in self.registry):
            self._watch = self.loop.call_later(POOL_WATCH_S, self._watch_pool)

    # -- breakers ------------------------------------------------------------------------------
    def breaker(self, replica: str) -> ReplicaBreaker:
        """This router's breaker of ``replica`` (the cluster syncs breakers through it)."""
        return self.registry.get(replica).breaker

    def breaker_changed(
        self, replica: str, transitions: Sequence[Transition], *, local: bool = True
    ) -> None:
        """Count and record breaker transitions; ``local=False`` for ones a peer caused.

        Only local opens with evidence about the replica itself go to the cluster (see
        :mod:`hanode.policies.breaker`): a broken path from this router is no reason to eject
        the replica from every router. Any open fails over the tries waiting on it here."""
        self.table.invalidate()
        opened = False
        for t in transitions:
            cls = t.failure_class.value if t.failure_class is not None else "none"
            self.metrics.breaker_transitions.labels(replica, cls, t.to_state.value).inc()
            if t.to_state is BreakerState.OPEN:
                opened = True
                if local and t.about_replica and self._open_listeners:
                    until = self.breaker(replica).snapshot(self.loop.time())["open_until"]
                    if isinstance(until, float):
                        for listener in self._open_listeners:
                            listener(replica, cls, until)
            if self.events is not None:
                self.events.add(
                    "breaker",
                    replica,
                    f"{t.from_state.value} -> {t.to_state.value} ({cls}): {t.reason}",
                    failure_class=cls,
                    from_state=t.from_state.value,
                    to_state=t.to_state.value,
                    # a peer's breaker or an operator reset is in the cluster log already
                    replicated=not local,
                )
            else:
                log.warning(
                    "breaker_transition",
                    replica=replica,
                    failure_class=cls,
                    from_state=t.from_state.value,
                    to_state=t.to_state.value,
                    reason=t.reason,
                )
        if opened:
            self.replica_dead(replica, "its breaker opened")

    def close(self) -> None:
        self.admission.close()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        self.registry.close()


def no_longer_serving(state: ReplicaState | None) -> str | None:
    """Why a replica with tries in flight is no longer fit to finish them, or None.

    Gone from the pool, health below serving (DOWN, UNREADY), or weight 0 although it may
    serve (e.g. its node was lost). A drain, a demotion to standby and the GPU-memory remove
    mark only stop new traffic: what the replica is already working on may finish."""
    if state is None:
        return "no longer in the pool"
    level = state.observation.level
    if not level.serving:
        return f"health {level.name}"
    if state.weight <= 0.0 and may_serve(state.role, state.admin, state.observation):
        return "out of routing"
    return None
