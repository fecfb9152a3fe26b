"""The OpenAI-compatible front door every hanode node serves.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (streamed or not),
``GET /v1/models`` (models with a replica that can take traffic) and ``GET /health``.
It authenticates, validates, and hands the request to a :class:`~hanode.router.relay.Relay`;
everything it knows about the pool comes from one lock-free snapshot read.

It also keeps the tries in flight per replica, so that when a replica is known dead (its
breaker opens, or a new snapshot takes it out of routing) the tries waiting on it are failed
over at once instead of waiting out the per-try timeout: O(tries on that replica).
"""

from __future__ import annotations

import asyncio
import hmac
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson
import structlog

from hanode.engines.base import EngineAdapter
from hanode.engines.registry import get_adapter
from hanode.events import EventLog
from hanode.http.client import split_url
from hanode.http.errors import send_error
from hanode.http.server import Request, Responder
from hanode.logs import new_request_id
from hanode.metrics.registry import NodeMetrics
from hanode.policies.breaker import BreakerConfig, BreakerState, ReplicaBreaker, Transition
from hanode.policies.picker import pick
from hanode.policies.retry import RetryBudget, RetryPolicy, deadline_from_header
from hanode.policies.seed import pin_seed
from hanode.pool.replica import AdminState, ReplicaSpec, Role
from hanode.pool.snapshot import PoolSnapshot, PoolView, ReplicaState
from hanode.router.relay import Relay
from hanode.router.routing_table import RoutingTable
from hanode.router.upstream import UpstreamPool
from hanode.router.validation import RequestError, RequestLimits, parse_inference_request

log = structlog.get_logger("hanode.router")

_JSON = b"application/json"

# While tries are in flight, how often the pool snapshot is checked for replicas taken out of
# routing (a pool owner may also call FrontDoor.pool_changed at once).
POOL_WATCH_S = 0.25


def with_seed(raw: bytes, body: dict[str, object], seed: int) -> bytes:
    """The request body with ``seed`` set. Splices the key into the raw bytes instead of
    re-encoding the whole body (it is on every sampled request); re-encodes only when a
    ``"seed": null`` is already there, so the JSON never holds the key twice."""
    body["seed"] = seed
    start = raw.find(b"{")
    if start < 0 or b'"seed"' in raw:  # maybe a "seed": null (or just the word): re-encode
        return orjson.dumps(body)
    return b'%s{"seed":%d,%s' % (raw[:start], seed, raw[start + 1 :])


class TrafficObserver(Protocol):
    """Passive health: what real traffic says about a replica (fed to the health checker)."""

    def record(
        self, replica: str, ok: bool, latency_s: float, ttft_s: float | None, now: float
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RouterSettings:
    api_keys: tuple[str, ...] = ()
    limits: RequestLimits = field(default_factory=RequestLimits)
    request_timeout_s: float = 300.0
    model_timeouts: Mapping[str, float] = field(default_factory=dict)  # per-model defaults
    max_request_timeout_s: float = 3600.0
    connect_timeout_s: float = 2.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retry_budget_ratio: float = 0.2
    retry_budget_min_per_s: float = 3.0
    slo_latency_s: float = 10.0
    slo_ttft_s: float = 2.0
    no_replica_retry_after_s: float = 2.0
    pin_seeds: bool = True
    breaker: BreakerConfig = field(default_factory=BreakerConfig)


class FrontDoor:
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
        # Cluster mode: told when a local breaker opens, so every router hears of it.
        self.on_breaker_open: Callable[[str, str, float], None] | None = None
        self.table = RoutingTable(
            view,
            settings.breaker,
            self.loop.time,
            on_reset=lambda replica, ts: self.breaker_changed(replica, ts, local=False),
        )
        self.budget = RetryBudget(settings.retry_budget_ratio, settings.retry_budget_min_per_s)
        self.inflight: dict[str, int] = {}
        self._tries: dict[str, set[Relay]] = {}  # replica -> relays with a try on it
        self._watched: PoolSnapshot = view.snapshot
        self._watch: asyncio.TimerHandle | None = None
        self._pools: dict[str, UpstreamPool] = {}
        self._adapters: dict[str, EngineAdapter] = {}
        self._keys = tuple(f"Bearer {k}".encode() for k in settings.api_keys)
        self._rand = random.random
        self._seed_bits = lambda: random.getrandbits(31)
        if not self._keys:
            log.warning("router_open", detail="no api_keys configured: the API is open to anyone")

    # -- dispatch ----------------------------------------------------------------------------
    def handle(self, request: Request, responder: Responder) -> None:
        path = request.path
        q = path.find(b"?")
        if q >= 0:
            path = path[:q]
        method = request.method
        if path == b"/v1/chat/completions" or path == b"/v1/completions":
            if method != b"POST":
                send_error(responder, 405, f"use POST for {path.decode()}")
            elif self._authorized(request, responder):
                self._infer(request, responder, path)
        elif path == b"/v1/models":
            if method != b"GET":
                send_error(responder, 405, "use GET for /v1/models")
            elif self._authorized(request, responder):
                self._models(responder)
        elif path == b"/health":
            served = self.view.snapshot.served_models()
            status = 200 if served else 503
            responder.send(
                status, orjson.dumps({"status": "ok" if served else "no_replica", "models": served})
            )
        else:
            self.metrics.rejected.labels("not_found").inc()
            send_error(responder, 404, f"no route for {method.decode()} {path.decode()[:200]}")

    def _authorized(self, request: Request, responder: Responder) -> bool:
        if not self._keys:
            return True
        given = request.headers.get(b"authorization", b"")
        for key in self._keys:
            if hmac.compare_digest(given, key):
                return True
        self.metrics.rejected.labels("unauthorized").inc()
        send_error(responder, 401, "missing or invalid API key", code="invalid_api_key")
        return False

    def _models(self, responder: Responder) -> None:
        snap = self.view.snapshot
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "hanode"}
            for m in snap.served_models()
        ]
        responder.send(200, orjson.dumps({"object": "list", "data": data}))

    def _infer(self, request: Request, responder: Responder, path: bytes) -> None:
        try:
            parsed = parse_inference_request(
                request.body, path == b"/v1/chat/completions", self.settings.limits
            )
        except RequestError as err:
            self.metrics.rejected.labels("invalid_request").inc()
            send_error(responder, err.status, err.message, param=err.param, code=err.code)
            return
        snap = self.view.snapshot
        if parsed.model not in snap.routes:
            self.metrics.rejected.labels("unknown_model").inc()
            send_error(
                responder,
                404,
                f"The model '{parsed.model}' does not exist",
                param="model",
                code="model_not_found",
            )
            return
        request_id = request.headers.get(b"x-request-id") or new_request_id().encode()
        extra = b"x-request-id: %s\r\n" % request_id[:128]
        body = request.body
        if self.settings.pin_seeds:
            seed = pin_seed(parsed.body, self._seed_bits)
            if seed is not None:
                body = with_seed(body, parsed.body, seed)
                extra += b"x-hanode-seed: %d\r\n" % seed
        now = self.loop.time()
        timeout = deadline_from_header(
            request.headers.get(b"x-hanode-timeout") or request.headers.get(b"x-stainless-timeout"),
            self.settings.model_timeouts.get(parsed.model, self.settings.request_timeout_s),
            self.settings.max_request_timeout_s,
        )
        Relay(self, responder, parsed, path, body, request_id, extra, now + timeout).start()

    # -- services for relays -----------------------------------------------------------------
    def choose(self, model: str, now: float, exclude: str | None) -> str | None:
        """Pick a replica whose breaker lets a request through, avoiding ``exclude`` if possible.

        ``allow()`` is asked of one replica at a time and only until one says yes: in
        HALF_OPEN a yes hands out the probe slot, which only the replica returned will use."""
        route = self.table.route(model, now)
        if route is None or not route.names:
            return None
        inflight = self.inflight
        for _ in range(3):
            name = pick(route, inflight, self._rand, exclude)
            if name is None:
                return None
            if self.table.breaker(name).allow(now):
                return name
            self.table.invalidate()
            route = self.table.route(model, now)
            if route is None or not route.names:
                return None
        others = sorted((n for n in route.names if n != exclude), key=lambda n: inflight.get(n, 0))
        for name in others:
            if self.table.breaker(name).allow(now):
                return name
        if exclude in route.names and self.table.breaker(exclude).allow(now):
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
            breaker = self.table.breakers.get(name)
            if breaker is not None:
                until = breaker.snapshot(now)["paused_until"]
                if isinstance(until, float):
                    ends.append(until)
        return min(ends) - now if ends else None

    def table_snapshot_replica(self, name: str) -> ReplicaState | None:
        return self.view.snapshot.replicas.get(name)

    # -- tries in flight -----------------------------------------------------------------------
    def track(self, replica: str, relay: Relay) -> None:
        """A try of ``relay`` is in flight on ``replica``."""
        self.inflight[replica] = self.inflight.get(replica, 0) + 1
        tries = self._tries.get(replica)
        if tries is None:
            tries = self._tries[replica] = set()
        tries.add(relay)
        if self._watch is None:
            self._watch = self.loop.call_later(POOL_WATCH_S, self._watch_pool)

    def untrack(self, replica: str, relay: Relay) -> None:
        self.inflight[replica] = self.inflight.get(replica, 1) - 1
        tries = self._tries.get(replica)
        if tries is not None:
            tries.discard(relay)
            if not tries:
                del self._tries[replica]

    def tries_on(self, replica: str) -> int:
        return len(self._tries.get(replica, ()))

    def replica_dead(self, replica: str, why: str) -> None:
        """Fail over every try on ``replica`` that has not sent a byte to its client."""
        tries = self._tries.get(replica)
        if tries:
            for relay in list(tries):
                relay.replica_dead(why)

    def pool_changed(self) -> None:
        """Fail over the tries on replicas that the current snapshot no longer lets serve.

        Run by a timer while tries are in flight; a pool owner may call it right after it
        publishes a snapshot."""
        snap = self._watched = self.view.snapshot
        for name in list(self._tries):
            why = no_longer_serving(snap.replicas.get(name))
            if why is not None:
                self.replica_dead(name, why)

    def _watch_pool(self) -> None:
        self._watch = None
        if self.view.snapshot is not self._watched:
            self.pool_changed()
        if self._tries:
            self._watch = self.loop.call_later(POOL_WATCH_S, self._watch_pool)

    def upstream_pool(self, spec: ReplicaSpec) -> UpstreamPool:
        pool = self._pools.get(spec.name)
        if pool is None:
            host, port, _ = split_url(spec.url)
            pool = self._pools[spec.name] = UpstreamPool(
                host, port, self.settings.connect_timeout_s
            )
        return pool

    def adapter(self, replica: str) -> EngineAdapter:
        adapter = self._adapters.get(replica)
        if adapter is None:
            state = self.view.snapshot.replicas.get(replica)
            adapter = get_adapter(state.spec.engine if state else "openai")
            self._adapters[replica] = adapter
        return adapter

    def breaker(self, replica: str) -> ReplicaBreaker:
        """This router's breaker of ``replica`` (the cluster syncs breakers through it)."""
        return self.table.breaker(replica)

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
                if local and t.about_replica and self.on_breaker_open is not None:
                    until = self.table.breaker(replica).snapshot(self.loop.time())["open_until"]
                    if isinstance(until, float):
                        self.on_breaker_open(replica, cls, until)
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
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        for pool in self._pools.values():
            pool.close()


def no_longer_serving(state: ReplicaState | None) -> str | None:
    """Why a replica with tries in flight is no longer fit to finish them, or None.

    Gone from the pool, health below serving (DOWN, UNREADY), or weight 0 without an operator
    reason (e.g. its node was lost). A drain, a demotion to standby and the GPU-memory remove
    mark only stop new traffic: what the replica is already working on may finish."""
    if state is None:
        return "no longer in the pool"
    level = state.observation.level
    if not level.serving:
        return f"health {level.name}"
    if (
        state.weight <= 0.0
        and state.admin is AdminState.ENABLED
        and state.role is Role.ACTIVE
        and not state.observation.gpu_removed
    ):
        return "out of routing"
    return None
