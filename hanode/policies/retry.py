"""Retries: which failures to retry, how long to wait, and how many retries the pool can afford.

Retries turn a partial outage into a full one when every client retries every failure (a retry
storm). The budget caps retries at a fraction of recent requests plus a small floor, as Finagle
and Linkerd do, so a dying pool sees at most ``1 + ratio`` times its normal load, not
``max_attempts`` times. Pure: no clock reads (``now`` is monotonic seconds), ``rand`` injected.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from hanode.policies.failure import FailureClass


class RetryBudget:
    """Retries allowed over a sliding window: ``ratio`` per request plus ``min_retries_per_s``.

    The window is a ring of ``buckets`` counters, each ``window_s / buckets`` seconds wide, so
    memory is fixed whatever the rate. The window seen at time ``t`` is the current bucket and
    the ``buckets - 1`` before it: it covers more than ``window_s - width`` and at most
    ``window_s`` seconds.

    :meth:`try_spend` grants a retry iff ``retries < ratio * requests + floor`` in that window,
    where ``floor = min_retries_per_s * window_s``. Exact bound (what the tests check): for every
    granted retry at time ``t``,

        retries granted in (t - window_s + width, t]  <=  ceil(ratio * R + floor)

    where ``R`` is the number of requests recorded in (t - window_s, t]. Requests in the first
    bucket of the window still count although part of it has slid out; that is the one-bucket
    tolerance of bucketing.
    """

    __slots__ = (
        "_floor",
        "_n",
        "_ratio",
        "_req",
        "_requests",
        "_ret",
        "_retries",
        "_tick",
        "_width",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        min_retries_per_s: float = 3.0,
        window_s: float = 10.0,
        *,
        buckets: int = 10,
    ) -> None:
        if not (ratio >= 0.0 and min_retries_per_s >= 0.0 and 0.0 < window_s < math.inf):
            raise ValueError(
                f"need ratio >= 0, min_retries_per_s >= 0, 0 < window_s < inf; got {ratio}, "
                f"{min_retries_per_s}, {window_s}"
            )
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets}")
        self._ratio = ratio
        self._floor = min_retries_per_s * window_s
        self._n = buckets
        self._width = window_s / buckets
        self._req = [0] * buckets  # requests per bucket
        self._ret = [0] * buckets  # granted retries per bucket
        self._requests = 0  # sums over the window
        self._retries = 0
        self._tick: int | None = None  # absolute index of the newest bucket

    def _advance(self, now: float) -> int:
        """Slide the window to ``now``; return the ring slot of the current bucket."""
        tick = math.floor(now / self._width)
        last = self._tick
        if last is None:
            self._tick = tick
        elif tick > last:  # time never goes back here: an older ``now`` counts as the newest
            n = self._n
            req, ret = self._req, self._ret
            for t in range(last + 1, last + 1 + min(tick - last, n)):
                slot = t % n
                self._requests -= req[slot]
                self._retries -= ret[slot]
                req[slot] = ret[slot] = 0
            self._tick = tick
        else:
            tick = last
        return tick % self._n

    def record_request(self, now: float) -> None:
        """Count one original request (not a retry) towards the budget."""
        self._req[self._advance(now)] += 1
        self._requests += 1

    def try_spend(self, now: float) -> bool:
        """Take one retry from the budget if there is one left; False means do not retry."""
        slot = self._advance(now)
        if self._retries < self._ratio * self._requests + self._floor:
            self._ret[slot] += 1
            self._retries += 1
            return True
        return False


def backoff_delay(
    attempt: int,
    base_s: float = 0.02,
    cap_s: float = 1.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): "full jitter", uniform in
    ``[0, min(cap_s, base_s * 2**attempt)]``, so that clients that failed together do not
    retry together. ``rand`` returns floats in [0, 1)."""
    # min(..., 1000): 2.0 ** 1024 raises; the product may reach inf, which min() caps.
    ceiling = min(cap_s, base_s * 2.0 ** min(max(attempt, 0), 1000))
    if not ceiling > 0.0:  # zero, negative or NaN settings: no wait
        return 0.0
    return min(ceiling, max(0.0, rand() * ceiling))


# Worth another try on (another) replica: the failure is the replica's, or "not now".
RETRYABLE: frozenset[FailureClass] = frozenset(
    {
        FailureClass.GPU_OOM,
        FailureClass.TIMEOUT,
        FailureClass.RATE_LIMITED,
        FailureClass.BUSY,
        FailureClass.CONNECTION,
        FailureClass.SERVER_ERROR,
    }
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a request is retried. ``max_attempts`` counts the first try; ``per_try_timeout_s`` is
    the time to first byte of one try (generation itself may take much longer)."""

    max_attempts: int = 3
    per_try_timeout_s: float = 60.0
    base_backoff_s: float = 0.02
    cap_backoff_s: float = 1.0

    def should_retry(self, failure: FailureClass, response_started: bool) -> bool:
        """Retry only if nothing reached the client yet (a retry would splice two answers) and
        the failure is not the request's own (another replica would refuse it too)."""
        return not response_started and failure in RETRYABLE

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """:func:`backoff_delay` with this policy's base and cap."""
        return backoff_delay(attempt, self.base_backoff_s, self.cap_backoff_s, rand)


_SECONDS = re.compile(rb"[0-9]{1,12}(?:\.[0-9]{0,9})?|\.[0-9]{1,9}")


def deadline_from_header(value: bytes | None, default_s: float, max_s: float) -> float:
    """Seconds from a client's timeout header ("30", "2.5"): never above the configured
    deadline ``default_s`` (itself capped at ``max_s``).

    A client may shorten the operator's deadline, never lengthen it: a header of 75 s must
    not hold a replica's slot past a configured 30 s. Missing, malformed, zero or negative
    values give the configured deadline: a bad header must not turn into an instant failure.
    Only plain decimals are accepted; ``float`` would also take "nan", "inf" and "1_0".
    """
    seconds = configured = min(default_s, max_s)
    if value is not None:
        text = value.strip()
        if _SECONDS.fullmatch(text):
            parsed = float(text)
            if 0.0 < parsed < configured:
                seconds = parsed
    return seconds
