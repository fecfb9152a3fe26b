"""One relayed request's state and what it comes to: the base of the relay.

:class:`RelayOutcomes` holds the per-request fields (in ``__slots__``; the relay adds none) and
the bookkeeping every end of a try or request goes through: the try's release from the
replica's in-flight count, its breaker verdict (or the probe slot handed back without one), the
passive-health sample with the try's own latency, the client's error answer (or the cut of a
started stream), and the request's one count with its three success kinds. The try loop,
failover and timers that decide *when* these happen live in :mod:`hanode.router.relay`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from hanode.http.errors import error_body, send_error
from hanode.http.responder import Responder
from hanode.policies.failure import FailureClass
from hanode.router.core import RouterCore
from hanode.router.outcome import StreamInspector, classify
from hanode.router.registry import Replica
from hanode.router.upstream import TryError, UpstreamHandle
from hanode.router.validation import ParsedRequest

log = structlog.get_logger("hanode.relay")

# The error code of a deadline the client set that passed.
CLIENT_DEADLINE = "client_deadline_exceeded"


def _token_times(
    inspector: StreamInspector, stream: bool, t0: float, now: float
) -> tuple[float | None, float | None]:
    """(TTFT, TPOT) of one answered try. TTFT only for streams: a whole answer's first byte is
    its last. TPOT from usage.completion_tokens (or the events counted): for a stream the time
    after the first token per further token; for a whole answer its time per token (prefill
    included, which a long answer makes small)."""
    tokens = inspector.output_tokens(stream)
    if not stream:
        return None, ((now - t0) / tokens if tokens else None)
    first = inspector.first_output_at
    if first is None or first < t0:  # a continuation try: the first token was another try's
        return None, None
    tpot = (now - first) / (tokens - 1) if tokens is not None and tokens > 1 else None
    return first - t0, tpot


class RelayOutcomes:
    __slots__ = (
        "_accounted",
        "_attempts",
        "_body",
        "_by",
        "_core",
        "_counted",
        "_deadline",
        "_err",
        "_err_size",
        "_extra",
        "_fed",
        "_first_byte",
        "_free",
        "_got_body",
        "_handle",
        "_inspector",
        "_last_error",
        "_loop",
        "_ok",
        "_on_end",
        "_path",
        "_pending",
        "_probe",
        "_replica",
        "_request_id",
        "_responder",
        "_retry_after",
        "_sse",
        "_stall_at",
        "_status",
        "_t0",
        "_target",
        "_timer",
        "_try_t0",
        "_upstream_headers",
        "parsed",
    )
    _target: Replica  # the replica of the current (or last) try; unset before the first

    if TYPE_CHECKING:  # the relay's, so that it is the registry's Try (no method at runtime)

        def replica_dead(self, why: str) -> None: ...

    def __init__(
        self,
        core: RouterCore,
        responder: Responder,
        parsed: ParsedRequest,
        path: bytes,
        body: bytes,
        request_id: bytes,
        extra_headers: bytes,
        timeout_s: float,
        deadline_by: bytes | None = None,
        on_end: Callable[[int, bool, float], None] | None = None,
    ) -> None:
        """``deadline_by``: the client header that shortened the deadline, if one did;
        ``on_end(status, functional success, duration)``: called once when the request is
        counted (the admission gate frees its place and records the SLO)."""
        self._on_end = on_end
        self._core = core
        self._loop = core.loop
        self._responder = responder
        self.parsed = parsed
        self._path = path
        self._body = body
        self._request_id = request_id
        self._extra = extra_headers
        self._t0 = self._loop.time()
        self._try_t0 = self._t0
        self._deadline = self._t0 + timeout_s  # from the relay's own start, so messages are exact
        self._by = deadline_by
        self._attempts = 0  # every try sent
        self._free = 0  # of which free failovers (see the module docstring)
        self._replica = ""  # the name of self._target, set with it by each try
        self._probe = False  # the try in flight holds its breaker's half-open probe slot
        self._handle: UpstreamHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._counted = False
        self._ok = False
        self._status = 0
        self._first_byte: float | None = None
        self._inspector = StreamInspector(self._loop.time)
        self._err: list[bytes] = []
        self._err_size = 0
        self._upstream_headers: dict[bytes, bytes] = {}
        self._last_error: tuple[int, str, str | None] | None = None
        self._retry_after: float | None = None
        self._accounted = False
        self._sse = False  # the client gets a chunked event stream (room for an error event)
        self._fed = False  # body bytes came in the current upstream read
        self._pending: list[bytes] = []  # 2xx body pieces of the current read, not yet relayed
        self._got_body = False  # body bytes of a 2xx answer came at all
        self._stall_at = 0.0  # after a 2xx head: silence until then is no stall

    def _cut(self, message: str, code: str) -> None:
        """Cut a started answer. An event stream first gets a terminal error event, so an SSE
        client sees why; nothing looks like a clean end (no [DONE], no last chunk)."""
        responder = self._responder
        if self._sse and not responder.done:
            # The leading blank lines end an event the replica may have left half-sent.
            responder.write(b"\n\ndata: %s\n\n" % error_body(504, message, code=code))
            responder.uncork()
        responder.abort()

    def _drop_probe(self) -> None:
        """The try in flight ends without a verdict: hand its probe slot back, if it held one."""
        if self._probe and self._counted:
            self._target.breaker.release_probe()
        self._probe = False

    # -- outcomes ------------------------------------------------------------------------------
    def _log_try_failed(self, label: str, status: int, message: str) -> None:
        log.info(
            "try_failed",
            request_id=self._request_id.decode(errors="replace"),
            model=self.parsed.model,
            replica=self._replica,
            attempt=self._attempts,
            failure_class=label,
            status=status,
            detail=message[:200],
        )

    def _deadline_text(self, what: str) -> str:
        """Which deadline passed: the client's (naming its header) or the configured one."""
        seconds = round(self._deadline - self._t0, 3)
        if self._by is not None:
            header = self._by.decode()
            return f"the deadline of {seconds:g}s set by the client's {header} header passed {what}"
        return f"the request's deadline of {seconds:g}s passed {what}"

    def _deadline_error(self, what: str) -> None:
        """Answer 504 for a deadline that passed before the first byte."""
        code = CLIENT_DEADLINE if self._by is not None else FailureClass.TIMEOUT.value
        self._last_error = (504, self._deadline_text(what), code)
        self._respond_last_error()

    def _respond_last_error(self) -> None:
        status, message, code = self._last_error or (503, "no replica could take the request", None)
        retry_after = self._retry_after
        if status in (429, 503) and retry_after is None:
            retry_after = self._core.settings.no_replica_retry_after_s
        send_error(self._responder, status, message, code=code, retry_after=retry_after)
        self._account(status, usable=False, complete=False, count_replica=self._replica or "-")
        log.warning(
            "request_failed",
            request_id=self._request_id.decode(errors="replace"),
            model=self.parsed.model,
            status=status,
            attempts=self._attempts,
            detail=message[:200],
        )

    def _record_failure(
        self,
        failure: FailureClass,
        *,
        kind: TryError | None = None,
        retry_after: float | None = None,
    ) -> None:
        core = self._core
        now = self._loop.time()
        self._probe = False  # on_failure gives the probe's verdict
        transitions = self._target.breaker.on_failure(
            failure,
            now,
            refused=kind is TryError.REFUSED,
            unreachable=kind is not None and kind.unreachable,
            retry_after=retry_after,
        )
        core.breaker_changed(self._replica, transitions)
        if core.observer is not None and failure not in (
            FailureClass.CONTEXT_LENGTH,
            FailureClass.CLIENT_ERROR,
            FailureClass.RATE_LIMITED,
        ):
            core.observer.record(self._replica, False, now - self._try_t0, None, now)

    def _finish_success(self) -> None:
        core = self._core
        now = self._loop.time()
        self._probe = False  # on_success gives the probe's verdict
        transitions = self._target.breaker.on_success(now)
        if transitions:
            core.breaker_changed(self._replica, transitions)
        inspector = self._inspector
        stream = self.parsed.stream
        usable = inspector.has_output
        complete = inspector.done if stream else True
        if core.observer is not None:
            # This try's own times: an earlier dead try is not the serving replica's latency.
            # An unusable 2xx (empty, cut, unparseable) is a functional failure: it brings the
            # replica's next L2 prompt forward instead of passing for a useful answer.
            ttft, tpot = _token_times(inspector, stream, self._try_t0, now)
            ok = usable and complete
            core.observer.record(self._replica, ok, now - self._try_t0, ttft, now, tpot)
        self._account(self._status, usable=usable, complete=complete)

    def _release(self) -> None:
        if self._counted:
            self._counted = False
            self._core.untrack(self._target, self)

    def _account(
        self, status: int, *, usable: bool, complete: bool, count_replica: str | None = None
    ) -> None:
        """Count the request once, with its three success kinds."""
        self._release()
        if self._accounted:
            return
        self._accounted = True
        core = self._core
        now = self._loop.time()
        duration = now - self._t0
        ttft = (self._first_byte - self._t0) if self._first_byte is not None else None
        outcome = classify(
            status,
            usable,
            complete,
            duration,
            ttft if self.parsed.stream else None,
            core.settings.slo_latency_s,
            core.settings.slo_ttft_s,
        )
        core.metrics.observe_request(
            self.parsed.model,
            count_replica if count_replica is not None else self._replica,
            status,
            outcome.technical,
            outcome.functional,
            outcome.quality,
            duration,
            ttft if self.parsed.stream else None,
        )
        if self._on_end is not None:
            self._on_end(status, outcome.technical and outcome.functional, duration)
