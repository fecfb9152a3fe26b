"""Passive health: what real traffic tells us, so test prompts need not run all the time.

The router records every finished try here, each with its own latency (a try that failed
over is charged to its own replica, not to the one that served the retry). The health checker
reads rolling latency/TTFT for L3, counts a recent useful answer as a passed L2, and re-checks
L2 at once after a failure.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

_MAX_SAMPLES = 128
_STALE_KEEP = 5
# A failed try that held its request at least this long is a latency sample too (the replica
# was that slow, at least); quicker failures (refused, an instant 503) say nothing about speed
# and must not make a struggling replica look fast.
SLOW_FAILURE_S = 1.0


@dataclass(slots=True)
class _ReplicaTraffic:
    samples: deque[tuple[float, float, float | None]] = field(
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
        self, replica: str, ok: bool, latency_s: float, ttft_s: float | None, now: float
    ) -> None:
        t = self._by_replica.get(replica)
        if t is None:
            t = self._by_replica[replica] = _ReplicaTraffic()
        if ok:
            t.last_success = now
            t.samples.append((now, latency_s, ttft_s))
        else:
            t.last_failure = now
            if latency_s >= SLOW_FAILURE_S:
                t.samples.append((now, latency_s, None))

    def last_success(self, replica: str) -> float | None:
        t = self._by_replica.get(replica)
        return t.last_success if t else None

    def failed_since(self, replica: str, since: float) -> bool:
        t = self._by_replica.get(replica)
        return bool(t and t.last_failure is not None and t.last_failure > since)

    def latency_ms(self, replica: str, now: float) -> tuple[float | None, float | None]:
        """Median latency and TTFT (ms) over the window; the last few samples if none is recent.

        Keeping stale samples avoids forgetting a slow replica just because its lowered weight
        gives it little traffic; new samples replace them as soon as any arrive.
        """
        t = self._by_replica.get(replica)
        if t is None or not t.samples:
            return None, None
        horizon = now - self.window_s
        recent = [s for s in t.samples if s[0] >= horizon]
        if not recent:
            recent = list(t.samples)[-_STALE_KEEP:]
        latency = statistics.median(s[1] for s in recent) * 1000.0
        ttfts = [s[2] for s in recent if s[2] is not None]
        ttft = statistics.median(ttfts) * 1000.0 if ttfts else None
        return latency, ttft
