"""Circuit breaker per replica, with a rule per failure class.

Inference failures are not web failures. A too-long prompt is the request's fault and says
nothing about the replica; a 429 or 503 means "not now", not "broken"; a GPU OOM means "send
less" long before it means "send nothing"; a refused connection means the process is gone. So
each :class:`~hanode.engines.base.FailureClass` gets its own rule (see :class:`BreakerConfig`)
instead of one error-rate threshold.

States: CLOSED (normal) -> OPEN (nothing is sent for an open period) -> HALF_OPEN (at most
``half_open_probes`` requests in flight as probes) -> CLOSED on probe success, or OPEN again with
a doubled open period on probe failure.

Pure and single-threaded: no clock reads (``now`` is monotonic seconds from the caller), no I/O.
Every state change is returned as :class:`Transition` objects for the caller to log and count.
The OPEN -> HALF_OPEN change is driven by time: :meth:`ReplicaBreaker.allow` or
:meth:`ReplicaBreaker.poll` makes it when they notice the open period is over, and it is handed
out by the next call that returns transitions (``on_success``, ``on_failure``, ``poll``,
``reset``, ``force_open``), so no transition is lost although ``allow`` returns a bool.

Hot path: ``allow`` on a closed breaker is one attribute read and a comparison; ``on_success``
on a closed breaker is two attribute writes.

Evidence classes: an OPEN transition carries ``about_replica``. True when the evidence is about
the replica itself, whoever looks: GPU OOMs, server errors (5xx that are not "busy"), a refused
connection (nothing listens). False when it may only be about this router's path to it:
timeouts, connection resets, a connect that timed out or found no route, a peer that stopped
acknowledging. Only opens about the replica are worth replicating to other routers; a path
failure protects this router alone. A peer's open (:meth:`ReplicaBreaker.force_open`) is False:
it was replicated already.

Caveat: the breaker does not know which request a result belongs to. In HALF_OPEN a result is
taken as a probe verdict only while a probe is in flight; a late result of a request sent before
the breaker opened may therefore be taken for the probe's verdict. Results that arrive while
OPEN do not change the state.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from hanode.policies.failure import FailureClass

_INF = math.inf


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Thresholds of one replica's breaker; durations in seconds."""

    # GPU_OOM: cut the weight at once, trip on a burst, climb back linearly afterwards.
    oom_weight_cut: float = 0.25
    oom_trip_count: int = 3
    oom_window_s: float = 30.0
    oom_recovery_s: float = 30.0
    # TIMEOUT (no first byte within the per-try deadline).
    timeout_trip_count: int = 3
    # CONNECTION (reset, other) and SERVER_ERROR; a refused connection trips at once.
    consecutive_failures: int = 5
    # RATE_LIMITED: pause without counting a failure.
    default_retry_after_s: float = 2.0
    max_pause_s: float = 60.0
    # BUSY: back off without counting a failure.
    busy_backoff_s: float = 1.0
    # OPEN / HALF_OPEN.
    open_base_s: float = 5.0
    open_max_s: float = 60.0
    half_open_probes: int = 1
    half_open_successes: int = 1

    def __post_init__(self) -> None:
        counts = (
            self.oom_trip_count,
            self.timeout_trip_count,
            self.consecutive_failures,
            self.half_open_probes,
            self.half_open_successes,
        )
        if min(counts) < 1:
            raise ValueError(f"breaker counts must be >= 1, got {counts}")
        durations = (
            self.oom_window_s,
            self.oom_recovery_s,
            self.default_retry_after_s,
            self.max_pause_s,
            self.busy_backoff_s,
        )
        if not all(0.0 <= d < _INF for d in durations):
            raise ValueError(f"breaker durations must be finite and >= 0, got {durations}")
        if not 0.0 < self.open_base_s <= self.open_max_s < _INF:
            raise ValueError(
                f"need 0 < open_base_s <= open_max_s < inf, got {self.open_base_s}, "
                f"{self.open_max_s}"
            )
        if not 0.0 <= self.oom_weight_cut <= 1.0:
            raise ValueError(f"oom_weight_cut must be in [0, 1], got {self.oom_weight_cut}")


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change; ``failure_class`` is what caused it (None: time, success, operator).
    ``about_replica``: an OPEN caused by evidence about the replica itself, not this router's
    path to it (see the module docstring); only those are replicated to other routers."""

    failure_class: FailureClass | None
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    about_replica: bool = False


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN

# Failure classes that are a verdict on the replica (count towards tripping, fail a probe).
_COUNTED = frozenset(
    {
        FailureClass.GPU_OOM,
        FailureClass.TIMEOUT,
        FailureClass.CONNECTION,
        FailureClass.SERVER_ERROR,
    }
)


class ReplicaBreaker:
    """The breaker of one replica. Methods take ``now`` (monotonic seconds) and never block.

    - :meth:`allow` before sending; when it returns True in HALF_OPEN a probe is in flight and
      the caller owes exactly one of :meth:`on_success`, :meth:`on_failure`,
      :meth:`release_probe` for it.
    - :meth:`weight_factor` multiplies the replica's routing weight (OOM cut and recovery).
    """

    __slots__ = (
        "_backoff_until",
        "_clear_at",
        "_failures",
        "_last_failure",
        "_oom_times",
        "_open_until",
        "_paused_until",
        "_pending",
        "_probe_ok",
        "_probes",
        "_ramp_end",
        "_ramp_start",
        "_reopens",
        "_state",
        "_timeouts",
        "_trip_class",
        "config",
    )

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        self._state = _CLOSED
        # allow() is True at once when now >= _clear_at: max(pause, backoff) while CLOSED, and
        # +inf otherwise so that OPEN and HALF_OPEN take the slow path.
        self._clear_at = -_INF
        self._paused_until = -_INF  # 429
        self._backoff_until = -_INF  # 503
        self._open_until = -_INF
        self._timeouts = 0  # consecutive TIMEOUTs
        self._failures = 0  # consecutive CONNECTION (not refused) / SERVER_ERROR
        self._oom_times: deque[float] = deque(maxlen=config.oom_trip_count)
        self._ramp_start = -_INF  # weight climbs from the cut at _ramp_start to 1 at _ramp_end
        self._ramp_end = -_INF
        self._probes = 0  # HALF_OPEN probes in flight
        self._probe_ok = 0  # HALF_OPEN probe successes so far
        self._reopens = 0  # consecutive HALF_OPEN -> OPEN; doubles the open period
        self._trip_class: FailureClass | None = None
        self._last_failure: FailureClass | None = None
        self._pending: list[Transition] = []  # OPEN -> HALF_OPEN noticed by allow()

    # ------------------------------------------------------------------ reading

    @property
    def state(self) -> BreakerState:
        """The last recorded state; an OPEN breaker whose period is over reads OPEN until
        :meth:`allow` or :meth:`poll` notices (``snapshot(now)`` shows the effective one)."""
        return self._state

    def allow(self, now: float) -> bool:
        """May a request be sent now? False while OPEN, paused (429), backing off (503), or
        HALF_OPEN with every probe slot taken. True in HALF_OPEN takes a probe slot."""
        return now >= self._clear_at or self._allow_slow(now)

    def _allow_slow(self, now: float) -> bool:
        state = self._state
        if state is _CLOSED:
            return False  # paused or backing off: _clear_at said so
        if state is _OPEN:
            if now < self._open_until:
                return False
            self._to_half_open()
        if now < self._paused_until or now < self._backoff_until:
            return False
        if self._probes >= self.config.half_open_probes:
            return False
        self._probes += 1
        return True

    def weight_factor(self, now: float) -> float:
        """Multiplier in [0, 1] for the replica's routing weight: 0 while OPEN, the OOM cut
        while HALF_OPEN (enough to be picked for a probe), then a linear climb back to 1."""
        if now >= self._ramp_end and self._state is _CLOSED:
            return 1.0
        cut = self.config.oom_weight_cut
        if self._state is _OPEN:
            return 0.0 if now < self._open_until else cut
        if self._state is _HALF_OPEN:
            return cut
        span = self._ramp_end - self._ramp_start
        frac = (now - self._ramp_start) / span if span > 0.0 else 1.0
        return cut + (1.0 - cut) * min(1.0, max(0.0, frac))

    def snapshot(self, now: float) -> dict[str, object]:
        """Plain values for status pages and metrics; does not change anything."""
        state = self._state
        if state is _OPEN and now >= self._open_until:
            state = _HALF_OPEN
        return {
            "state": state.value,
            "open_until": _finite(self._open_until) if state is _OPEN else None,
            "paused_until": _future(self._paused_until, now),
            "backoff_until": _future(self._backoff_until, now),
            "last_failure_class": None if self._last_failure is None else self._last_failure.value,
            "weight_factor": self.weight_factor(now),
            "consecutive_timeouts": self._timeouts,
            "consecutive_failures": self._failures,
            "recent_ooms": sum(1 for t in self._oom_times if now - t <= self.config.oom_window_s),
            "probes_in_flight": self._probes,
            "probe_successes": self._probe_ok,
            "reopens": self._reopens,
        }

    # ------------------------------------------------------------------ results

    def on_success(self, now: float) -> list[Transition]:
        """A request got a good answer: consecutive counters restart; a probe may close."""
        self._timeouts = 0
        self._failures = 0
        if self._state is _CLOSED and not self._pending:
            return []
        return self._take(self._success_slow(now))

    def _success_slow(self, now: float) -> list[Transition]:
        if self._state is not _HALF_OPEN or self._probes == 0:
            return []  # CLOSED, OPEN, or a late result while no probe is in flight
        self._probes -= 1
        self._probe_ok += 1
        if self._probe_ok < self.config.half_open_successes:
            return []
        if self._trip_class is FailureClass.GPU_OOM:
            self._start_ramp(now)
        return [self._close(None, "probe succeeded")]

    def on_failure(
        self,
        failure: FailureClass,
        now: float,
        *,
        refused: bool = False,
        unreachable: bool = False,
        retry_after: float | None = None,
    ) -> list[Transition]:
        """A request failed with ``failure``. ``refused`` (CONNECTION only): the TCP connection
        was refused, i.e. nothing listens, so trip at once. ``unreachable`` (CONNECTION only):
        the connect timed out or the peer stopped acknowledging: trip at once too (a dead host
        costs a timeout per try), but as evidence about the path, not the replica.
        ``retry_after`` (RATE_LIMITED only): seconds from the Retry-After header, if any."""
        if failure is FailureClass.CONTEXT_LENGTH or failure is FailureClass.CLIENT_ERROR:
            self._release()  # the request's fault: no verdict on the replica
            return self._take([])
        self._last_failure = failure
        if failure is FailureClass.RATE_LIMITED:
            self._pause(now, retry_after)
            self._release()
            return self._take([])
        if failure is FailureClass.BUSY:
            self._backoff_until = max(self._backoff_until, now + self.config.busy_backoff_s)
            self._sync_clear()
            self._release()
            return self._take([])
        if failure is FailureClass.GPU_OOM:
            self._start_ramp(now)  # even while OPEN: the climb starts from the latest OOM
        state = self._state
        if state is _OPEN:
            return self._take([])  # a late result: already open
        if state is _HALF_OPEN:
            if self._probes == 0:
                return self._take([])  # a late result, not the probe's verdict
            self._probes -= 1
            self._reopens += 1
            about = _about_replica(failure, refused, unreachable)
            return self._take([self._open(failure, now, f"probe failed: {failure.value}", about)])
        return self._take(self._count(failure, now, refused, unreachable))

    def _count(
        self, failure: FailureClass, now: float, refused: bool, unreachable: bool
    ) -> list[Transition]:
        """Count a failure while CLOSED; trip when its rule says so."""
        cfg = self.config
        if failure is FailureClass.GPU_OOM:
            ooms = self._oom_times
            ooms.append(now)
            if len(ooms) < cfg.oom_trip_count or now - ooms[0] > cfg.oom_window_s:
                return []
            reason = f"{cfg.oom_trip_count} GPU OOMs within {cfg.oom_window_s:g}s"
        elif failure is FailureClass.TIMEOUT:
            self._timeouts += 1
            if self._timeouts < cfg.timeout_trip_count:
                return []
            reason = f"{self._timeouts} consecutive timeouts"
        elif failure is FailureClass.CONNECTION and unreachable:
            reason = "replica unreachable"
        elif failure is FailureClass.CONNECTION and refused:
            reason = "connection refused"
        else:
            self._failures += 1
            if self._failures < cfg.consecutive_failures:
                return []
            reason = f"{self._failures} consecutive failures (last: {failure.value})"
        self._reopens = 0
        return [self._open(failure, now, reason, _about_replica(failure, refused, unreachable))]

    def release_probe(self) -> None:
        """A HALF_OPEN probe ended without a verdict (client went away, request cancelled)."""
        self._release()

    def poll(self, now: float) -> list[Transition]:
        """Make the time-driven OPEN -> HALF_OPEN change if due and hand out pending ones."""
        if self._state is _OPEN and now >= self._open_until:
            self._to_half_open()
        return self._take([])

    # ------------------------------------------------------------------ operator, cluster

    def reset(self, now: float) -> list[Transition]:
        """Operator reset: CLOSED with every counter, pause, backoff and OOM cut forgotten."""
        out = self._take([])
        if self._state is not _CLOSED:
            out.append(self._close(None, "operator reset"))
        self._paused_until = self._backoff_until = -_INF
        self._ramp_start = self._ramp_end = -_INF
        self._oom_times.clear()
        self._timeouts = self._failures = 0
        self._last_failure = self._trip_class = None
        self._sync_clear()
        return out

    def force_open(self, now: float, failure: FailureClass, until: float) -> list[Transition]:
        """Apply a breaker opened elsewhere (another node): OPEN until ``until``, at most
        ``open_max_s`` from now. An open period already longer is kept; a past ``until`` is
        ignored."""
        out = self._take([])
        until = min(until, now + self.config.open_max_s)
        if not until > now:  # also rejects NaN
            return out
        self._last_failure = failure
        if self._state is _OPEN:
            self._open_until = max(self._open_until, until)
            return out
        out.append(self._open(failure, now, "opened by peer"))
        self._open_until = until
        return out

    # ------------------------------------------------------------------ internals

    def _open(
        self, failure: FailureClass, now: float, reason: str, about: bool = False
    ) -> Transition:
        cfg = self.config
        t = Transition(failure, self._state, _OPEN, reason, about)
        self._state = _OPEN
        # min(..., 64): 2.0 ** huge overflows; 2**64 periods are past any open_max_s anyway.
        period = cfg.open_base_s * 2.0 ** min(self._reopens, 64)
        self._open_until = now + min(cfg.open_max_s, period)
        self._trip_class = failure
        self._probes = self._probe_ok = 0
        self._timeouts = self._failures = 0
        self._oom_times.clear()
        self._clear_at = _INF
        return t

    def _close(self, failure: FailureClass | None, reason: str) -> Transition:
        t = Transition(failure, self._state, _CLOSED, reason)
        self._state = _CLOSED
        self._open_until = -_INF
        self._probes = self._probe_ok = self._reopens = 0
        self._sync_clear()
        return t

    def _to_half_open(self) -> None:
        self._pending.append(Transition(None, _OPEN, _HALF_OPEN, "open period over"))
        self._state = _HALF_OPEN
        self._probes = self._probe_ok = 0

    def _take(self, out: list[Transition]) -> list[Transition]:
        """Prepend transitions noticed by allow() so they reach the caller in order."""
        if not self._pending:
            return out
        pending = self._pending
        self._pending = []
        pending.extend(out)
        return pending

    def _release(self) -> None:
        if self._state is _HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def _pause(self, now: float, retry_after: float | None) -> None:
        cfg = self.config
        wait = cfg.default_retry_after_s
        if retry_after is not None and retry_after >= 0.0:  # NaN and negatives: default
            wait = retry_after
        self._paused_until = max(self._paused_until, now + min(wait, cfg.max_pause_s))
        self._sync_clear()

    def _start_ramp(self, now: float) -> None:
        self._ramp_start = now
        self._ramp_end = now + self.config.oom_recovery_s

    def _sync_clear(self) -> None:
        if self._state is _CLOSED:
            self._clear_at = max(self._paused_until, self._backoff_until)
        else:
            self._clear_at = _INF

    def __repr__(self) -> str:
        return (
            f"ReplicaBreaker(state={self._state.value}, timeouts={self._timeouts}, "
            f"failures={self._failures}, probes={self._probes}, reopens={self._reopens})"
        )


def _about_replica(failure: FailureClass, refused: bool, unreachable: bool) -> bool:
    """Is this failure evidence about the replica itself (see the module docstring)?"""
    if failure is FailureClass.GPU_OOM or failure is FailureClass.SERVER_ERROR:
        return True
    return failure is FailureClass.CONNECTION and refused and not unreachable


def _finite(t: float) -> float | None:
    return t if math.isfinite(t) else None


def _future(t: float, now: float) -> float | None:
    return t if t > now else None
