"""SLO bookkeeping per model and class, and error-budget burn rates (pure; times passed in).

Burn rate over a window = (bad events / all events in the window) / (1 - target): 1 spends the
budget exactly over the SLO period, 14.4 spends 2 % of a 30-day budget in an hour. The alert
pairs are the SRE workbook's multiwindow ones: a long window that proves the burn is big and a
short one that proves it still goes on (``ALERT_PAIRS``).

Events are counted in one-minute buckets kept for the longest window (3 days: 4320 buckets per
series at most). Availability (the model had a serving replica) is sampled by whoever owns the
clock and counted the same way; latency keeps the last ``LATENCY_SAMPLES`` for the p95.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

BUCKET_S = 60.0
WINDOWS: dict[str, float] = {
    "5m": 300.0,
    "30m": 1800.0,
    "1h": 3600.0,
    "6h": 21600.0,
    "3d": 259200.0,
}
# (short window, long window, burn-rate threshold): page on the first two, ticket on the last.
ALERT_PAIRS: tuple[tuple[str, str, float], ...] = (
    ("5m", "1h", 14.4),
    ("30m", "6h", 6.0),
    ("6h", "3d", 1.0),
)
LATENCY_SAMPLES = 1000


def burn_rate(total: float, bad: float, target: float) -> float:
    """Error-budget burn over a window with ``total`` events of which ``bad`` failed."""
    if total <= 0:
        return 0.0
    budget = 1.0 - target
    if budget <= 0:
        return math.inf if bad > 0 else 0.0
    return (bad / total) / budget


class Buckets:
    """Counts (total, bad) per minute over the longest window."""

    __slots__ = ("_b",)

    def __init__(self) -> None:
        self._b: deque[list[float]] = deque()  # [bucket index, total, bad]

    def add(self, now: float, bad: bool, weight: float = 1.0) -> None:
        index = math.floor(now / BUCKET_S)
        b = self._b
        if b and b[-1][0] == index:
            b[-1][1] += weight
            b[-1][2] += weight if bad else 0.0
        else:
            b.append([float(index), weight, weight if bad else 0.0])
        horizon = index - math.ceil(WINDOWS["3d"] / BUCKET_S)
        while b and b[0][0] <= horizon:
            b.popleft()

    def window(self, now: float, seconds: float) -> tuple[float, float]:
        """(total, bad) over the last ``seconds`` (whole buckets, the current one included)."""
        first = math.floor(now / BUCKET_S) - math.ceil(seconds / BUCKET_S) + 1
        total = bad = 0.0
        for index, t, f in reversed(self._b):
            if index < first:
                break
            total += t
            bad += f
        return total, bad


@dataclass(frozen=True, slots=True)
class SloReport:
    model: str
    request_class: str
    target: float
    requests_1h: float
    success_rate_1h: float | None  # functional success over the last hour
    availability_1h: float | None
    p95_latency_s: float | None
    burn: dict[str, float]  # window -> burn rate
    alerts: tuple[str, ...]  # "5m/1h" etc. whose both windows burn above the threshold


class SloSeries:
    """One (model, class): success, availability and latency."""

    __slots__ = ("_latency", "availability", "requests", "target")

    def __init__(self, target: float) -> None:
        self.target = target
        self.requests = Buckets()
        self.availability = Buckets()
        self._latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)

    def record(self, now: float, ok: bool, latency_s: float | None) -> None:
        self.requests.add(now, not ok)
        if ok and latency_s is not None:
            self._latency.append(latency_s)

    def sample_availability(self, now: float, serving: bool) -> None:
        self.availability.add(now, not serving)

    def p95(self) -> float | None:
        if not self._latency:
            return None
        ordered = sorted(self._latency)
        return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]

    def burn(self, now: float, window: str) -> float:
        total, bad = self.requests.window(now, WINDOWS[window])
        return burn_rate(total, bad, self.target)

    def report(self, model: str, request_class: str, now: float) -> SloReport:
        burns = {w: self.burn(now, w) for w in WINDOWS}
        total, bad = self.requests.window(now, WINDOWS["1h"])
        a_total, a_bad = self.availability.window(now, WINDOWS["1h"])
        alerts = tuple(
            f"{short}/{long}"
            for short, long, factor in ALERT_PAIRS
            if burns[short] > factor and burns[long] > factor
        )
        return SloReport(
            model,
            request_class,
            self.target,
            total,
            (total - bad) / total if total else None,
            (a_total - a_bad) / a_total if a_total else None,
            self.p95(),
            burns,
            alerts,
        )
