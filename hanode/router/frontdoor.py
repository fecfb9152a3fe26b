"""The OpenAI-compatible front door every hanode node serves: HTTP dispatch, nothing else.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (streamed or not),
``GET /v1/models`` (models with a replica that can take traffic) and ``GET /health``.
It authenticates, validates, and starts a :class:`~hanode.router.relay.Relay` on the
:class:`~hanode.router.core.RouterCore`, which holds what relays need (replicas, breakers,
the retry budget, tries in flight); everything it knows about the pool comes from one
lock-free snapshot read. The few members the cluster and status use are passed through.
"""

from __future__ import annotations

import hmac
import random
from collections.abc import Mapping

import orjson
import structlog

from hanode.events import EventLog
from hanode.http.errors import send_error
from hanode.http.request import Request
from hanode.http.responder import Responder
from hanode.logs import new_request_id
from hanode.metrics.registry import NodeMetrics
from hanode.policies.affinity import session_key
from hanode.policies.breaker import ReplicaBreaker
from hanode.policies.classes import (
    HASH_PREFIX,
    KeyGrant,
    RequestClass,
    key_digest,
    resolve_class,
)
from hanode.policies.degradation import PromptTooLong
from hanode.policies.retry import deadline_from_header
from hanode.policies.seed import pin_seed
from hanode.pool.snapshot import PoolView
from hanode.router.core import RouterCore, RouterSettings, TrafficObserver
from hanode.router.relay import Relay
from hanode.router.validation import ParsedRequest, RequestError, parse_inference_request

__all__ = ["FrontDoor", "RouterSettings", "TrafficObserver", "with_seed"]

log = structlog.get_logger("hanode.router")

# Client deadline headers: hanode's own, and the one the OpenAI SDKs send.
_HANODE_TIMEOUT = b"x-hanode-timeout"
_STAINLESS_TIMEOUT = b"x-stainless-timeout"
_SESSION_HEADER = b"x-session-id"
_CLASS_HEADER = b"x-hanode-class"


def with_seed(raw: bytes, body: dict[str, object], seed: int) -> bytes:
    """The request body with ``seed`` set. Splices the key into the raw bytes instead of
    re-encoding the whole body (it is on every sampled request); re-encodes only when a
    ``"seed": null`` is already there, so the JSON never holds the key twice."""
    body["seed"] = seed
    start = raw.find(b"{")
    if start < 0 or b'"seed"' in raw:  # maybe a "seed": null (or just the word): re-encode
        return orjson.dumps(body)
    return b'%s{"seed":%d,%s' % (raw[:start], seed, raw[start + 1 :])


class FrontDoor:
    def __init__(
        self,
        view: PoolView,
        settings: RouterSettings,
        metrics: NodeMetrics,
        observer: TrafficObserver | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.core = core = RouterCore(view, settings, metrics, observer, events)
        self.loop = core.loop
        self.view = view
        self.settings = settings
        self.metrics = metrics
        admission = settings.admission
        plain = [k for k in settings.api_keys if not k.startswith(HASH_PREFIX)]
        self._keys = tuple(f"Bearer {k}".encode() for k in plain)
        self._grants = admission.plain_keys  # token -> its class ([[api_keys]] key = ...)
        self._hashed = admission.hashed_keys  # SHA-256 hex -> its class (sha256 = ...)
        self._grant_keys = tuple((b"Bearer " + k, g) for k, g in self._grants.items())
        self._open = not (self._keys or self._grants or self._hashed)
        self._seed_bits = lambda: random.getrandbits(31)
        # Set when the node stops: new requests get 503 and connection: close (in-flight ones
        # finish), so clients and load balancers move to another node.
        self.draining = False
        if self._open:
            log.warning("router_open", detail="no api_keys configured: the API is open to anyone")

    # -- dispatch ----------------------------------------------------------------------------
    def handle(self, request: Request, responder: Responder) -> None:
        path = request.path
        q = path.find(b"?")
        if q >= 0:
            path = path[:q]
        method = request.method
        if self.draining:
            self._refuse_draining(responder)
        elif path == b"/v1/chat/completions" or path == b"/v1/completions":
            if method != b"POST":
                send_error(responder, 405, f"use POST for {path.decode()}")
            else:
                grant = self._authenticate(request, responder)
                if grant is not False:
                    self._infer(request, responder, path, grant)
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

    def _refuse_draining(self, responder: Responder) -> None:
        self.metrics.rejected.labels("draining").inc()
        responder.close_connection()
        send_error(
            responder,
            503,
            "this node is stopping: send the request to another node",
            code="node_draining",
            retry_after=1,
        )

    def _authorized(self, request: Request, responder: Responder) -> bool:
        return self._authenticate(request, responder) is not False

    def _authenticate(self, request: Request, responder: Responder) -> KeyGrant | bool | None:
        """The key's grant (None: a [router] api_keys key, or an open API: the default
        class), or False after answering 401."""
        if self._open:
            return None
        given = request.headers.get(b"authorization", b"")
        for key in self._keys:  # "Bearer <key>" exactly, as clients send it: no allocation
            if hmac.compare_digest(given, key):
                return None
        for key, grant in self._grant_keys:
            if hmac.compare_digest(given, key):
                return grant
        # The scheme is case-insensitive (RFC 7235), with any spaces before the token, as the
        # control API reads it.
        scheme, _, token = given.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            token = token.strip()
            ok = False
            for key in self._keys:  # constant time, no early exit between keys
                ok |= hmac.compare_digest(token, key[7:])
            if ok:
                return None
            found: KeyGrant | None = None
            for key, grant in self._grant_keys:
                if hmac.compare_digest(token, key[7:]):
                    found = grant
            if found is not None:
                return found
            if self._hashed:
                # A digest reveals nothing of the key: a dict lookup on it is safe.
                hashed = self._hashed.get(key_digest(token))
                if hashed is not None:
                    return hashed
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

    def _infer(
        self, request: Request, responder: Responder, path: bytes, grant: KeyGrant | bool | None
    ) -> None:
        admission = self.settings.admission
        header = request.headers.get(_CLASS_HEADER)
        cls_name = resolve_class(
            grant if isinstance(grant, KeyGrant) else None,
            header.decode(errors="replace") if header is not None else None,
            admission.classes,
            admission.default_class,
            header_allowed=self._open,
        )
        if cls_name is None:
            self.metrics.rejected.labels("invalid_request").inc()
            send_error(
                responder,
                400,
                f"x-hanode-class names no configured class "
                f"(known: {', '.join(sorted(admission.classes))})",
                code="invalid_class",
            )
            return
        try:
            parsed = parse_inference_request(
                request.body, path == b"/v1/chat/completions", self.settings.limits
            )
        except RequestError as err:
            self.metrics.rejected.labels("invalid_request").inc()
            send_error(responder, err.status, err.message, param=err.param, code=err.code)
            return
        snap = self.view.snapshot
        # A model with a fallback chain is known even while none of its replicas is in the
        # pool: its requests may go to the fallback (or get 503), not 404.
        if parsed.model not in snap.routes and not admission.model(parsed.model).fallback:
            self.metrics.rejected.labels("unknown_model").inc()
            send_error(
                responder,
                404,
                f"The model '{parsed.model}' does not exist",
                param="model",
                code="model_not_found",
            )
            return
        cls = admission.classes[cls_name]
        gate = self.core.admission
        try:
            degraded = gate.degrade_request(parsed.model, cls, parsed.body)
        except PromptTooLong as err:
            gate.stats.degraded.labels(parsed.model, "prompt").inc()
            param = "messages" if path == b"/v1/chat/completions" else "prompt"
            send_error(responder, 400, str(err), param=param, code="context_length_exceeded")
            return
        raw = orjson.dumps(parsed.body) if degraded else request.body
        if isinstance(grant, KeyGrant):
            fair = grant.label
        else:
            token = request.headers.get(b"authorization", b"")
            fair = key_digest(token)[:12] if token else "-"

        def start(model: str, fell_back: bool) -> None:
            self._relay(request, raw, responder, path, parsed, cls, model, fell_back, degraded)

        gate.submit(parsed.model, cls, fair, start, responder)

    def _relay(
        self,
        request: Request,
        raw: bytes,
        responder: Responder,
        path: bytes,
        parsed: ParsedRequest,
        cls: RequestClass,
        model: str,
        fell_back: bool,
        degraded: list[str],
    ) -> None:
        """Start the relay of an admitted request (on ``model``: the asked one or a fallback)."""
        if responder.done:
            self.core.admission.release(model, cls, 0.0)
            return
        asked = parsed.model
        if fell_back:
            parsed.body["model"] = model
            parsed.model = model
            raw = orjson.dumps(parsed.body)
            degraded = [*degraded, "fallback"]
            self.core.admission.stats.degraded.labels(asked, "fallback").inc()
        # The client's id (or a new one) follows the request: logs of every try, the upstream
        # request to each replica tried, and the response.
        request_id = (request.headers.get(b"x-request-id") or new_request_id().encode())[:128]
        extra = b"x-request-id: %s\r\n" % request_id
        if degraded:
            extra += b"x-hanode-degraded: %s\r\n" % ",".join(degraded).encode()
        body = raw
        if self.settings.pin_seeds:
            seed = pin_seed(parsed.body, self._seed_bits)
            if seed is not None:
                body = with_seed(body, parsed.body, seed)
                extra += b"x-hanode-seed: %d\r\n" % seed
        settings = self.settings
        configured = min(
            settings.model_timeouts.get(asked, settings.request_timeout_s),
            settings.max_request_timeout_s,
        )
        header = _HANODE_TIMEOUT
        value = request.headers.get(header)
        if not value:
            header = _STAINLESS_TIMEOUT
            value = request.headers.get(header)
        timeout = deadline_from_header(value, configured, configured)
        # A deadline the client shortened is the client's: its expiry blames no replica.
        by = header if timeout < configured else None
        gate = self.core.admission

        def ended(status: int, ok: bool, duration: float) -> None:
            gate.release(model, cls, duration)
            gate.record(asked, cls, status, ok, duration)

        relay = Relay(
            self.core, responder, parsed, path, body, request_id, extra, timeout, by, ended
        )
        # Session affinity: x-session-id, else the OpenAI "user" field (policies/affinity.py).
        relay.start(session_key(request.headers.get(_SESSION_HEADER), parsed.body.get("user")))

    # -- what status and metrics read (the cluster talks to ``core`` directly) ----------------
    @property
    def inflight(self) -> Mapping[str, int]:
        """Name -> requests this router has in flight (live, not a copy)."""
        return self.core.inflight

    @property
    def breakers(self) -> Mapping[str, ReplicaBreaker]:
        """Name -> this router's breaker, for every replica it has one of (a copy)."""
        return self.core.registry.breakers()

    def close(self) -> None:
        self.core.close()
