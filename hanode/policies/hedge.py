"""Hedged first tries: when to send a second copy of a request that has not answered yet.

A replica that is slow to start an answer (a long queue, a stuck prefill) holds the request
while others are idle. A hedge sends a second try to another replica once the first has waited
longer than the pool's 95th percentile time to first byte; the first answer wins and the other
is cancelled. Only about 5% of requests wait that long, so hedges add about 5% load, and each
one is counted against the retry budget (which caps them when the pool is struggling).

Which requests may be hedged is a class: ``unary`` (non-streamed), ``streams``, ``all``, or
``off`` (the default). Pure: the window is fed latencies by the router, no clock is read.
"""

from __future__ import annotations

import math
from typing import Final

HEDGE_CLASSES: Final = ("off", "unary", "streams", "all")

# Samples kept per model, and the fewest before any hedge (a p95 of 3 samples means nothing).
WINDOW: Final = 256
MIN_SAMPLES: Final = 20


def hedges(cls: str, stream: bool) -> bool:
    """Does hedging class ``cls`` cover a request (streamed or not)?"""
    return cls == "all" or (cls == "streams" and stream) or (cls == "unary" and not stream)


class FirstByteWindow:
    """The last :data:`WINDOW` times to first byte of one model's first tries, and their p95."""

    __slots__ = ("_dirty", "_i", "_p95", "_samples")

    def __init__(self) -> None:
        self._samples: list[float] = []
        self._i = 0
        self._p95: float | None = None
        self._dirty = False

    def add(self, seconds: float) -> None:
        if not (seconds >= 0.0 and math.isfinite(seconds)):
            return
        if len(self._samples) < WINDOW:
            self._samples.append(seconds)
        else:
            self._samples[self._i] = seconds
            self._i = (self._i + 1) % WINDOW
        self._dirty = True

    def __len__(self) -> int:
        return len(self._samples)

    def p95(self) -> float | None:
        """The 95th percentile (nearest rank), or None below :data:`MIN_SAMPLES` samples.
        Sorted again only after new samples, at most once per call."""
        if len(self._samples) < MIN_SAMPLES:
            return None
        if self._dirty:
            ordered = sorted(self._samples)
            self._p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
            self._dirty = False
        return self._p95
