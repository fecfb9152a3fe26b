"""Weighted power-of-two-choices: which replica serves the next request.

Two candidates are drawn independently in proportion to their weights and the one with fewer
requests in flight (as counted by this node) wins. Weights carry the slow signal (health,
latency, GPU memory), in-flight counts the fast one, so a replica that just got a burst is
skipped before the next health round notices it. Ties go to the first draw, so with no load the
traffic shares equal the weight shares exactly.

Called once per request: no allocation beyond what ``rand`` does, O(log n) per draw.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable, Mapping

from hanode.pool.snapshot import ModelRoute


def pick(
    route: ModelRoute,
    inflight: Mapping[str, int],
    rand: Callable[[], float] = random.random,
    exclude: str | None = None,
) -> str | None:
    """Pick a replica name from ``route``, or ``None`` when the route is empty.

    ``rand`` returns floats in ``[0, 1)`` (like :func:`random.random`); it is called exactly twice
    whenever the route has two or more replicas.

    ``exclude`` (used by retries) names a replica that must not be picked while any other
    candidate exists. If it is the only candidate it is returned anyway: a retry on the replica
    that just failed beats failing the request outright, and the caller can still compare the
    result with ``exclude`` and give up if it prefers.
    """
    names = route.names
    n = len(names)
    if n <= 1:
        return names[0] if n else None
    cum = route.cumulative
    last = n - 1

    if exclude is None or exclude not in names:
        total = cum[last]
        # min(): rand() < 1 but rand() * total may round up to total.
        i = min(bisect_right(cum, rand() * total), last)
        j = min(bisect_right(cum, rand() * total), last)
    else:
        # Draw from the others without rejection: map [0, total - w) onto the cumulative
        # line with the excluded interval [lo, hi) cut out.
        k = names.index(exclude)
        lo = cum[k - 1] if k else 0.0
        hi = cum[k]
        rest = cum[last] - (hi - lo)
        i = _draw_around(cum, rand() * rest, lo, hi, k, last)
        j = _draw_around(cum, rand() * rest, lo, hi, k, last)

    if i == j:
        return names[i]
    first = names[i]
    second = names[j]
    return second if inflight.get(second, 0) < inflight.get(first, 0) else first


def _draw_around(cum: tuple[float, ...], x: float, lo: float, hi: float, k: int, last: int) -> int:
    """Index for point ``x`` on the cumulative line with ``[lo, hi)`` (index ``k``) removed."""
    i = bisect_right(cum, x) if x < lo else bisect_right(cum, x - lo + hi)
    if i > last:
        i = last
    if i == k:  # only reachable through float rounding at the interval edges
        i = k - 1 if k else k + 1
    return i
