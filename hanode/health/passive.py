"""Passive health: what real traffic tells us, so test prompts need not run all the time.

The router records every finished try here, each with its own latency (a try that failed
over is charged to its own replica, not to the one that served the retry). The health checker
reads rolling latency, TTFT (streamed answers only: a whole answer's first byte is its last)
and TPOT (from the output's token count) for L3, counts a recent useful answer as a passed L2,
and re-checks L2 at once after a failure, an unusable 2xx included.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

_MAX_SAMPLES = 128
_STALE_KEEP = 5
# A failed try that held its request at least this long is a latency sample too (the replica
# was that slow, at least); quicker failures (refused, an instant 503) say nothing about speed
# and must not make a struggling replica look fast.
SLOW_FAILURE_S = 1.0


class TrafficLatency(NamedTuple):
    """Medians in ms over the window; ``None`` where no sample had the figure. ``recent`` is
    false when no sample fell inside the window and the figures are the last few kept."""

    latency_ms: float | None
    ttft_ms: float | None
    tpot_ms: float | None
    recent: bool = True


_NONE = TrafficLatency(None, None, None, False)


@dataclass(slots=True)
class _ReplicaTraffic:
    # (when, latency s, ttft s or None, tpot s or None)
    samples: deque[tuple[float, float, float | None, float | None]] = field(
        default_factory=lambda: deque(maxlen=_MAX_SAMPLES)
    )
    last_success: float | None = None
    last_failure: float | None = None


class PassiveStats:
    """Rolling per-replica traffic statistics. Called from the event loop only."""

    def __init__(self, window_s: float) -> None:  # [health] passive_window_s
        self.window_s = window_s
        self._by_replica: dict[str, _ReplicaTraffic] = {}

    def record(
        self,
        replica: str,
        ok: bool,
        latency_s: float,
        ttft_s: float | None,
        now: float,
        tpot_s: float | None = None,
    ) -> None:
        t = self._by_replica.get(replica)
        if t is None:
            t = self._by_replica[replica] = _ReplicaTraffic()
        if ok:
            t.last_success = now
            t.samples.append((now, latency_s, ttft_s, tpot_s))
        else:
            t.last_failure = now
            if latency_s >= SLOW_FAILURE_S:
                t.samples.append((now, latency_s, None, None))

    def last_success(self, replica: str) -> float | None:
        t = self._by_replica.get(replica)
        return t.last_success if t else None

    def failed_since(self, replica: str, since: float) -> bool:
        t = self._by_replica.get(replica)
        return bool(t and t.last_failure is not None and t.last_failure > since)

    def latency_ms(self, replica: str, now: float) -> TrafficLatency:
        """Median latency, TTFT and TPOT (ms) over the window; the last few samples if none is
        recent.

        Keeping stale samples avoids forgetting a slow replica just because its lowered weight
        gives it little traffic; new samples replace them as soon as any arrive.
        """
        t = self._by_replica.get(replica)
        if t is None or not t.samples:
            return _NONE
        horizon = now - self.window_s
        recent = [s for s in t.samples if s[0] >= horizon]
        fresh = bool(recent)
        if not fresh:
            recent = list(t.samples)[-_STALE_KEEP:]
        latency = statistics.median(s[1] for s in recent) * 1000.0
        return TrafficLatency(
            latency, _median_ms(s[2] for s in recent), _median_ms(s[3] for s in recent), fresh
        )


def _median_ms(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) * 1000.0 if known else None
