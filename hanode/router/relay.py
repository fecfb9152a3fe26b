"""One proxied inference request: pick a replica, relay its answer, fail over before the first byte.

The relay is the connection's :class:`~hanode.router.upstream.Exchange`: callbacks from the
upstream parser drive it, timers bound it, and no task exists per request. Until the response
head has gone to the client a failed try may move to another replica (never the same one twice
in a row when another exists), within the retry budget, with backoff and full jitter. After the
first byte a failure can only cut the client's stream: resending would duplicate output.

Free failovers. A try that no live replica took (connect refused or timed out, the peer gone at
the TCP level, or abandoned because its replica was found dead while the try waited: its
breaker opened on another request's failure, or the pool took it out of routing) moves to
another replica at once, without backoff, and neither spends the retry budget nor counts
against ``max_attempts``. The budget exists so retries do not multiply the load on a struggling
pool; a request that a dead replica dropped adds no load that the request itself would not
have brought, and when one replica of many dies, every request it held fails over together:
charging them would fail clients while other replicas could serve them. Each such failover
also takes its replica out of this router's choice (the breaker trips at once, or the route
no longer holds it), so the loop ends by itself; :data:`MAX_FREE_FAILOVERS` is only a guard.

Passive statistics get each try's own latency: a dead try's time is charged to its replica,
never to the one that served the retry.

Continuation. A stream that breaks after its first byte (the connection lost, a stall, an error
event from the engine) is continued on another replica when :mod:`hanode.router.continuation`
allows it (``[router] stream_continuation``): the relay follows the events it relays
(:class:`~hanode.router.continuation.StreamFollower`), sends the continuation request as a new
try, and relays the rewritten rest into the same client stream. Continuations are bounded by
``stream_continuation_limit``, not by the retry budget (each one regenerates only what is left).
Where continuing could be wrong the stream ends with an error event, never with [DONE].

Deadlines and stalls. One timer per relay bounds every wait. Before a 2xx head it is the try
timer (``per_try_timeout_s``, or the request's deadline if sooner); it keeps running through an
error head, so an error body that never comes is the replica's timeout. After a 2xx head it is
the stream timer: the request's deadline, and a stall bound, ``stream_idle_timeout_s`` between
two reads (the first body byte may take the per-try time: a first token can be slow). A stall
is the replica's timeout and cuts the stream with a terminal SSE error event. A deadline the
client shortened with a header is the client's: its expiry gives no verdict on any replica.
"""

from __future__ import annotations

import asyncio

import structlog

from hanode.http.errors import send_error
from hanode.policies.breaker import BreakerState
from hanode.policies.failure import FailureClass
from hanode.router.continuation import StreamFollower
from hanode.router.hedge import HedgeTry
from hanode.router.relay_outcomes import CLIENT_DEADLINE, RelayOutcomes
from hanode.router.upstream import TryError
from hanode.router.upstream_errors import error_message, retry_after_seconds

log = structlog.get_logger("hanode.relay")

MAX_ERROR_BODY = 64 * 1024

# Failovers per request that cost neither the retry budget nor an attempt (see above).
MAX_FREE_FAILOVERS = 8

# The failure_class label of tries abandoned because their replica was found dead.
REPLICA_DEAD = "replica_dead"
# The failure_class label of streams cut because the replica went silent.
STREAM_STALL = "stream_stall"
# The error code of a stream cut so.
STREAM_STALLED = "stream_stalled"
# The error code of a broken stream that could not be continued.
NOT_CONTINUED = "stream_not_continued"

_STATUS_FOR_FAILURE = {
    FailureClass.TIMEOUT: 504,
    FailureClass.RATE_LIMITED: 429,
}


class Relay(RelayOutcomes):
    # The rest is declared by RelayOutcomes. _follow: the stream's follower when it may be
    # continued; _session: the session key that pins the request to a replica (affinity).
    __slots__ = ("_follow", "_hedge", "_hedge_timer", "_sent", "_session")

    # -- trying ------------------------------------------------------------------------------
    def start(self, session: str | None = None) -> None:
        self._session = session
        self._hedge: HedgeTry | None = None  # a second try in flight (policies/hedge.py)
        self._hedge_timer: asyncio.TimerHandle | None = None
        self._sent = b""  # the body of the last try sent
        self._follow: StreamFollower | None = None
        if self.parsed.stream and self._core.settings.stream_continuation:
            self._follow = StreamFollower(self.parsed.body, b"chat" in self._path)
        self._responder.on_abort(self._client_gone)
        self._core.budget.record_request(self._t0)
        self._try()

    def _try(self) -> None:
        if self._responder.done:
            return
        core = self._core
        now = self._loop.time()
        if now >= self._deadline:
            self._deadline_error("before a replica answered")
            return
        name = core.choose(
            self.parsed.model, now, exclude=self._replica or None, session=self._session
        )
        if name is None:
            if self._attempts == 0:
                status = core.refuse(self._responder, self.parsed.model, now)
                self._account(status, usable=False, complete=False, count_replica="-")
            else:
                self._respond_last_error()
            return
        target = core.registry.get(name)
        breaker = target.breaker
        probe = breaker.state is BreakerState.HALF_OPEN  # allow() gave us the probe slot
        state = core.view.snapshot.replicas.get(name)
        if state is None:  # vanished between pick and lookup: treat as no replica
            if probe:
                breaker.release_probe()
            self._respond_last_error()
            return
        follow = self._follow
        if follow is not None and follow.continued:
            # Can this replica's engine continue it (a chat on TGI cannot)?
            why = follow.refusal(1 << 30, engine=state.spec.engine)
            if why:
                if probe:
                    breaker.release_probe()
                core.metrics.stream_continuation_refused.labels(
                    self.parsed.model, _refusal_code(why)
                ).inc()
                self._cut(f"the stream could not be continued: {why}", NOT_CONTINUED)
                self._finish_continued(complete=False)
                self._account(200, usable=False, complete=False)
                return
        self._attempts += 1
        self._target = target
        self._replica = name
        self._probe = probe
        self._try_t0 = now
        self._counted = True
        core.track(target, self)
        self._status = 0
        self._err = []
        self._err_size = 0
        self._upstream_headers = {}
        pool = target.upstream(state.spec)
        body = self._body if follow is None else follow.request(state.spec.engine, self._body)
        self._sent = body
        payload = (
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
            b"x-request-id: %s\r\ncontent-length: %d\r\n\r\n%s"
            % (self._path, pool.host.encode(), pool.port, self._request_id, len(body), body)
        )
        remaining = self._deadline - now
        self._timer = self._loop.call_later(
            min(core.settings.retry.per_try_timeout_s, remaining), self._on_try_timeout
        )
        self._handle = pool.send(self, payload)
        if self._attempts == 1 and core.settings.hedge != "off":
            delay = core.hedge_delay(self.parsed.model, self.parsed.stream)
            if delay is not None and delay < remaining:
                self._hedge_timer = self._loop.call_later(delay, self._start_hedge)

    # -- Exchange callbacks ------------------------------------------------------------------
    def on_head(self, status: int, headers: dict[bytes, bytes], chunked: bool) -> None:
        self._status = status
        if 200 <= status < 300:
            self._cancel_timer()
            self._ok = True
            now = self._loop.time()
            settings = self._core.settings
            self._stall_at = max(
                self._try_t0 + settings.retry.per_try_timeout_s,
                now + settings.stream_idle_timeout_s,
            )
            self._got_body = False  # of this try
            if self._hedge is not None:  # this try answered first: the hedge is not needed
                self._cancel_hedge("lost")
            follow = self._follow
            if follow is None or not follow.continued:
                self._core.first_byte(self.parsed.model, self.parsed.stream, now - self._try_t0)
            content_type = headers.get(b"content-type", b"application/json")
            if follow is not None and not content_type.startswith(b"text/event-stream"):
                follow = self._follow = None if follow.continued == 0 else follow
            if follow is not None and follow.continued:
                # A continuation: the client's stream is open already, its head long sent.
                if self._handle is not None:
                    self._responder.set_flow_control(*self._handle.flow_control())
                if not content_type.startswith(b"text/event-stream"):
                    self._cancel_timer()
                    if self._handle is not None:
                        self._handle.abandon()
                        self._handle = None
                    self._stream_broke(
                        FailureClass.SERVER_ERROR,
                        f"replica '{self._replica}' answered a continuation without a stream",
                        "not_a_stream",
                    )
                return
            self._first_byte = now
            responder = self._responder
            responder.cork()  # the head waits for the body bytes of this same read
            length = headers.get(b"content-length")
            extra = self._extra + b"x-hanode-replica: %s\r\n" % self._replica.encode()
            if chunked or length is None or not length.isdigit():
                responder.start(status, content_type, extra)
                self._sse = self.parsed.stream
            else:
                responder.start(status, content_type, extra, content_length=int(length))
            if self._handle is not None:
                responder.set_flow_control(*self._handle.flow_control())
            # The stream timer is armed in flush() only if the body did not complete in
            # this same read: most non-streamed answers never need one.
        else:
            # The try timer runs on: the error body must come within the try's time.
            self._upstream_headers = headers

    def on_body(self, data: bytes) -> None:
        if self._ok:
            # Relayed at the end of this upstream read (_relay_pending): the pieces that came
            # together leave together, one chunk in one write, scanned once.
            self._pending.append(data)
        elif self._err_size < MAX_ERROR_BODY:
            self._err.append(data)
            self._err_size += len(data)

    def _relay_pending(self) -> None:
        """Send what this read brought: one chunk, followed and inspected in one pass."""
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._fed = True
        if self._follow is not None:
            data = self._follow.feed(data)
            if not data:
                return
        self._responder.write(data)
        self._inspector.feed(data)

    def flush(self) -> None:
        pending = self._pending
        if pending:  # _relay_pending, inline: once per upstream read
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._fed = True
            follow = self._follow
            if follow is not None:
                data = follow.feed(data)
            if data:
                self._responder.write(data)
                self._inspector.feed(data)
        if self._responder.corked is not None:
            self._responder.uncork()
        follow = self._follow
        if follow is not None and follow.error is not None and self._ok and not self._accounted:
            self._cancel_timer()
            if self._handle is not None:
                self._handle.abandon()
                self._handle = None
            message = f"replica '{self._replica}' sent an error event: {follow.error}"
            self._stream_broke(FailureClass.SERVER_ERROR, message[:300], "error_event")
            return
        if self._ok and not self._accounted:
            if self._fed:  # progress: one clock read per upstream read, not per chunk
                self._fed = False
                if not self._got_body:
                    # The first body bytes of this try: from here the bound is the inter-token
                    # timeout, no longer the first token's (the timer may be set for that).
                    self._got_body = True
                    self._cancel_timer()
                self._stall_at = self._loop.time() + self._core.settings.stream_idle_timeout_s
            if self._timer is None:
                when = min(self._deadline, self._stall_at)
                self._timer = self._loop.call_at(when, self._on_stream_timer)

    def on_complete(self) -> None:
        self._cancel_timer()
        self._handle = None
        if self._ok:
            responder = self._responder
            responder.cork()  # the last pieces of this read and the end leave in one write
            self._relay_pending()
            follow = self._follow
            if follow is not None and not follow.done and not follow.opaque:
                if follow.broken or not follow.ended_in_full():
                    # The answer ended without its end (or with an error event): broken.
                    responder.uncork()  # what the client was due goes now, whatever follows
                    what = f"an error event: {follow.error}" if follow.broken else "no [DONE]"
                    message = f"replica '{self._replica}' ended its stream with {what}"
                    label = "error_event" if follow.broken else "connection"
                    self._stream_broke(FailureClass.SERVER_ERROR, message[:300], label)
                    return
                closing = follow.closing()  # all text came, only [DONE] did not
                self._inspector.feed(closing)
                responder.write(closing)
            responder.end()
            self._finish_success()
            return
        status = self._status
        body = b"".join(self._err)
        adapter = self._target.adapter()
        failure = adapter.classify_error(status, body)
        retry_after = retry_after_seconds(self._upstream_headers.get(b"retry-after"))
        self._failed(failure, error_message(body, status), status, retry_after=retry_after)

    def on_error(self, message: str, kind: TryError) -> None:
        self._cancel_timer()
        self._handle = None
        if self._ok:
            self._relay_pending()  # what came before the error (a malformed rest) is relayed
        if kind is TryError.LOCAL:
            # This router's own resources ran out (file descriptors, ports): no evidence
            # about the replica, and another replica would fail the same way.
            self._drop_probe()
            self._release()
            self._core.out_of_resources(self._responder, message)
            self._account(503, usable=False, complete=False, count_replica="-")
            return
        if self._ok:
            # Bytes already reached the client: continue on another replica, or cut.
            self._stream_broke(FailureClass.CONNECTION, message, kind.value, kind=kind)
            return
        self._failed(FailureClass.CONNECTION, message, 502, kind=kind)

    # -- the replica found dead ----------------------------------------------------------------
    def replica_dead(self, why: str) -> None:
        """The replica of the try in flight is known dead (its breaker opened on another
        request's failure, or the pool took it out of routing): abandon the try and fail over
        now rather than wait out the per-try timeout. A stream already started goes on until
        its own connection fails: nothing can be retried after the first byte."""
        if self._ok or not self._counted:
            return
        self._cancel_timer()
        if self._handle is not None:
            self._handle.abandon()
            self._handle = None
        core = self._core
        replica = self._replica
        self._release()
        if self._probe:
            # The verdict on the replica came from elsewhere: this try gives none.
            self._probe = False
            self._target.breaker.release_probe()
        now = self._loop.time()
        if core.observer is not None:
            core.observer.record(replica, False, now - self._try_t0, None, now)
        message = f"replica '{replica}' was found dead while the try waited: {why}"
        self._log_try_failed(REPLICA_DEAD, 503, message)
        core.metrics.upstream_failures.labels(replica, REPLICA_DEAD).inc()
        self._retry_or_respond(FailureClass.CONNECTION, message, REPLICA_DEAD, free=True)

    # -- timers and cancellation -------------------------------------------------------------
    def _on_try_timeout(self) -> None:
        self._timer = None
        if self._handle is not None:
            self._handle.abandon()
            self._handle = None
        per_try = self._core.settings.retry.per_try_timeout_s
        replica = self._replica
        status = self._status  # non-zero: an error head came, its body did not
        if self._deadline - self._try_t0 < per_try:  # the request's deadline is what fired
            if self._by is not None:
                # The client chose it: no verdict on the replica, no retry, a 504 saying so.
                self._drop_probe()
                self._release()
                what = f"before replica '{replica}' answered"
                self._log_try_failed(CLIENT_DEADLINE, 504, what)
                self._deadline_error(what)
                return
            message = self._deadline_text(
                f"while replica '{replica}' sent the body of its HTTP {status}"
                if status
                else f"before replica '{replica}' answered"
            )
        elif status:
            message = f"replica '{replica}' sent HTTP {status} but no body within {per_try:g}s"
        else:
            message = f"replica '{replica}' sent no response within {per_try:g}s"
        self._failed(FailureClass.TIMEOUT, message, 504)

    def _on_stream_timer(self) -> None:
        """After a 2xx head: the deadline, or a stall; else re-armed for the later bound."""
        self._timer = None
        if self._accounted:
            return
        now = self._loop.time()
        if now >= self._deadline:
            self._on_deadline()
        elif now >= self._stall_at:
            self._on_stall(now)
        else:
            self._timer = self._loop.call_at(
                min(self._deadline, self._stall_at), self._on_stream_timer
            )

    def _on_deadline(self) -> None:
        self._timer = None
        if self._handle is not None:
            self._handle.abandon()
            self._handle = None
        self._cut(
            self._deadline_text("before the answer was complete"),
            CLIENT_DEADLINE if self._by is not None else FailureClass.TIMEOUT.value,
        )
        self._drop_probe()
        self._account(self._status, usable=False, complete=False)

    def _on_stall(self, now: float) -> None:
        """The replica went silent in the middle of a 2xx answer: its failure (a timeout)."""
        if self._handle is not None:
            self._handle.abandon()
            self._handle = None
        core = self._core
        replica = self._replica
        if self._got_body:
            idle = core.settings.stream_idle_timeout_s
            message = (
                f"replica '{replica}' stalled in the middle of its answer: nothing for {idle:g}s "
                "([router].stream_idle_timeout_s)"
            )
        else:
            waited = round(now - (self._first_byte or self._try_t0), 3)
            message = f"replica '{replica}' sent no body for {waited:g}s after its response head"
        log.warning(
            "stream_stalled",
            request_id=self._request_id.decode(errors="replace"),
            model=self.parsed.model,
            replica=replica,
            detail=message,
        )
        self._stream_broke(FailureClass.TIMEOUT, message, STREAM_STALL, code=STREAM_STALLED)

    # -- hedging (hanode/router/hedge.py) -------------------------------------------------------
    def _start_hedge(self) -> None:
        """The first try waited past the pool's p95 time to first byte: try another replica
        too (if the retry budget allows), the first answer wins."""
        self._hedge_timer = None
        core = self._core
        if self._ok or self._responder.done or not self._counted or self._hedge is not None:
            return
        now = self._loop.time()
        model = self.parsed.model
        if not core.budget.try_spend(now):
            core.metrics.hedges.labels(model, "budget").inc()
            return
        snap = core.view.snapshot
        current = snap.replicas.get(self._replica)
        name = core.choose(model, now, exclude=self._replica, session=self._session)
        state = snap.replicas.get(name) if name is not None else None
        if name is None or name == self._replica or state is None or current is None:
            return
        target = core.registry.get(name)
        probe = target.breaker.state is BreakerState.HALF_OPEN
        if state.spec.engine != current.spec.engine:  # the body may differ per engine
            if probe:
                target.breaker.release_probe()
            return
        hedge = HedgeTry(core, self, target, probe, now)
        pool = target.upstream(state.spec)
        body = self._sent
        payload = (
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s"
            % (self._path, pool.host.encode(), pool.port, len(body), body)
        )
        self._hedge = hedge
        hedge.handle = pool.send(hedge, payload)
        core.metrics.hedges.labels(model, "sent").inc()

    def hedge_won(
        self, hedge: HedgeTry, status: int, headers: dict[bytes, bytes], chunked: bool
    ) -> None:
        """The hedge's 2xx head came before this try's: cancel this try, carry on with it."""
        if hedge is not self._hedge or self._ok or self._responder.done:
            hedge.cancel()
            return
        self._cancel_timer()
        if self._handle is not None:
            self._handle.abandon()  # the engine frees the slot
            self._handle = None
        self._drop_probe()  # cancelled: no verdict on the first replica
        self._release()
        self._core.metrics.hedges.labels(self.parsed.model, "won").inc()
        self._adopt_hedge(hedge, answered=True)
        self.on_head(status, headers, chunked)

    def hedge_gone(self, hedge: HedgeTry) -> None:
        """The hedge failed on its own before answering: this relay's try goes on alone."""
        if self._hedge is hedge:
            self._hedge = None
            self._core.metrics.hedges.labels(self.parsed.model, "failed").inc()

    def _adopt_hedge(self, hedge: HedgeTry, *, answered: bool = False) -> None:
        """Make the hedge this relay's current try (it answered, or the first try failed)."""
        self._hedge = None
        hedge.hand_over()
        self._attempts += 1
        self._target = hedge.target
        self._replica = hedge.name
        self._probe = hedge.probe
        self._try_t0 = hedge.t0
        self._handle = hedge.handle
        self._counted = True
        self._core.track(hedge.target, self)
        self._status = 0
        self._err = []
        self._err_size = 0
        self._upstream_headers = {}
        if not answered:
            now = self._loop.time()
            left = self._try_t0 + self._core.settings.retry.per_try_timeout_s - now
            self._cancel_timer()
            self._timer = self._loop.call_later(
                max(0.0, min(left, self._deadline - now)), self._on_try_timeout
            )

    def _cancel_hedge(self, result: str | None) -> None:
        if self._hedge_timer is not None:
            self._hedge_timer.cancel()
            self._hedge_timer = None
        hedge, self._hedge = self._hedge, None
        if hedge is not None:
            hedge.cancel()
            if result is not None:
                self._core.metrics.hedges.labels(self.parsed.model, result).inc()

    def _account(
        self, status: int, *, usable: bool, complete: bool, count_replica: str | None = None
    ) -> None:
        self._cancel_hedge("lost")  # the request is over: a hedge still waiting is not needed
        super()._account(status, usable=usable, complete=complete, count_replica=count_replica)

    # -- a stream broken after its first byte --------------------------------------------------
    def _stream_broke(
        self,
        failure: FailureClass,
        message: str,
        label: str,
        *,
        kind: TryError | None = None,
        code: str = NOT_CONTINUED,
    ) -> None:
        """The try serving a started answer failed (its handle and timer are gone already):
        the replica's failure; then continue the stream elsewhere, or cut it with an error
        event saying why it was not continued."""
        core = self._core
        self._log_try_failed(label, self._status, message)
        self._release()
        self._record_failure(failure, kind=kind)
        core.metrics.upstream_failures.labels(self._replica, label).inc()
        follow = self._follow
        if follow is None:
            why = "stream continuation is off ([router].stream_continuation)" if self._sse else ""
        else:
            why = follow.refusal(core.settings.stream_continuation_limit) or ""
        if follow is not None and not why:
            if follow.ended_in_full():  # only the end was missing: no replica is needed
                closing = follow.closing()
                self._inspector.feed(closing)
                self._responder.write(closing)
                self._responder.end()
                self._finish_continued(complete=True)
                self._account(200, usable=self._inspector.has_output, complete=True)
                return
            self._continue(follow, message, label)
            return
        if why and follow is not None:
            core.metrics.stream_continuation_refused.labels(
                self.parsed.model, _refusal_code(why)
            ).inc()
        self._cut(f"{message}; the stream was not continued: {why}" if why else message, code)
        self._finish_continued(complete=False)
        self._account(self._status, usable=False, complete=False)

    def _continue(self, follow: StreamFollower, message: str, label: str) -> None:
        """Ask another replica for the rest of the stream (a new try, at once)."""
        core = self._core
        reason = label if label in (STREAM_STALL, "error_event") else "connection"
        core.metrics.stream_continuations.labels(self.parsed.model, self._replica, reason).inc()
        follow.continued += 1
        if core.events is not None:
            core.events.add(
                "stream",
                self._replica,
                f"stream continued elsewhere after {follow.tokens} tokens: {message[:200]}",
                request_id=self._request_id.decode(errors="replace"),
                model=self.parsed.model,
                continuation=follow.continued,
                reason=reason,
            )
        self._ok = False
        self._status = 0
        self._last_error = (502, message, FailureClass.CONNECTION.value)
        self._loop.call_soon(self._try)

    def _finish_continued(self, *, complete: bool) -> None:
        follow = self._follow
        if follow is not None and follow.continued:
            result = "complete" if complete else "cut"
            self._core.metrics.streams_continued.labels(self.parsed.model, result).inc()

    def _continuing(self) -> bool:
        """A continuation try is under way: the client's stream is open, no error answer can
        be sent any more, only an error event."""
        return self._follow is not None and self._follow.continued > 0 and self._responder.started

    def _respond_last_error(self) -> None:
        if not self._continuing():
            super()._respond_last_error()
            return
        _, message, code = self._last_error or (503, "no replica could take the rest", None)
        self._cut(f"the stream could not be continued: {message}", code or NOT_CONTINUED)
        self._finish_continued(complete=False)
        self._account(200, usable=False, complete=False)

    def _finish_success(self) -> None:
        self._finish_continued(complete=True)
        super()._finish_success()

    def _client_gone(self) -> None:
        self._cancel_timer()
        if self._handle is not None:
            self._handle.abandon()
            self._handle = None
        self._drop_probe()
        self._account(499, usable=False, complete=False)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- failing over -----------------------------------------------------------------------------
    def _failed(
        self,
        failure: FailureClass,
        message: str,
        status: int,
        *,
        kind: TryError | None = None,
        retry_after: float | None = None,
    ) -> None:
        core = self._core
        replica = self._replica
        label = failure.value if kind is None else kind.value
        self._log_try_failed(label, status, message)
        # Out of the in-flight registry first: if this failure opens the breaker, the other
        # tries on the replica are failed over, and this one is already being handled.
        self._release()
        self._record_failure(failure, kind=kind, retry_after=retry_after)
        core.metrics.upstream_failures.labels(replica, label).inc()
        if self._continuing() and failure in (
            FailureClass.CONTEXT_LENGTH,
            FailureClass.CLIENT_ERROR,
        ):
            # The continuation itself was refused (e.g. prompt plus output too long for the
            # other replica's context): nothing to retry, the stream ends with the reason.
            self._cut(f"the stream could not be continued: {message}", NOT_CONTINUED)
            self._finish_continued(complete=False)
            self._account(200, usable=False, complete=False, count_replica=replica)
            return
        if failure is FailureClass.CONTEXT_LENGTH:
            param = "messages" if b"chat" in self._path else "prompt"
            send_error(self._responder, 400, message, param=param, code="context_length_exceeded")
            self._account(400, usable=False, complete=False, count_replica=replica)
            return
        if failure is FailureClass.CLIENT_ERROR:
            send_error(self._responder, status, message)
            self._account(status, usable=False, complete=False, count_replica=replica)
            return
        free = kind is not None and kind.never_reached
        self._retry_or_respond(failure, message, label, free=free, retry_after=retry_after)

    def _retry_or_respond(
        self,
        failure: FailureClass,
        message: str,
        label: str,
        *,
        free: bool,
        retry_after: float | None = None,
    ) -> None:
        """Schedule the next try, or answer the client with the last error."""
        core = self._core
        if self._hedge is not None and not self._responder.done:
            # The hedge already waits on another replica: it is the next try.
            self._adopt_hedge(self._hedge)
            return
        self._last_error = (_STATUS_FOR_FAILURE.get(failure, 503), message, failure.value)
        if retry_after is not None:
            self._retry_after = retry_after
        now = self._loop.time()
        policy = core.settings.retry
        if (
            not policy.should_retry(failure, response_started=False)
            or now >= self._deadline
            or self._responder.done
        ):
            self._respond_last_error()
            return
        if free and self._free < MAX_FREE_FAILOVERS:
            self._free += 1
            core.metrics.retries.labels(self.parsed.model, label).inc()
            self._loop.call_soon(self._try)
            return
        charged = self._attempts - self._free
        if charged < policy.max_attempts:
            if core.budget.try_spend(now):
                core.metrics.retries.labels(self.parsed.model, label).inc()
                delay = policy.backoff(charged - 1)
                self._loop.call_later(min(delay, max(self._deadline - now, 0.0)), self._try)
                return
            core.metrics.retry_budget_exhausted.labels(self.parsed.model).inc()
        self._respond_last_error()


def _refusal_code(why: str) -> str:
    """A short label for a refusal message (the metric's reason)."""
    for word, code in (
        ("continued", "limit"),
        ("more than one choice", "n"),
        ("tool calls", "tool_calls"),
        ("structured", "structured_output"),
        ("echoed", "echo"),
        ("engine", "engine"),
        ("prompt", "prompt"),
    ):
        if word in why:
            return code
    return "other"
