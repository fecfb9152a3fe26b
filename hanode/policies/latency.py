"""Is a replica slow? Time to first token and time per output token against its peers.

End-to-end latency says more about the answer's length than about the replica, so it is shown
but never judged. A replica is slow when its TTFT or its TPOT is above the pool's median by more
than an allowance: a relative tolerance, and never less than an absolute floor, so that 4 ms
against 3 ms (noise on a fast model) moves nothing. Beyond the allowance the weight factor is
``pool / (value - allowance)``: 1 at the edge (no jump), about ``pool / value`` far from it.

One rule for the weights (:mod:`hanode.policies.weights`) and for L3
(:mod:`hanode.policies.l3`), so a replica the router starves is also the one L3 names.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from hanode.pool.replica import AdminState, Observation, Role


@dataclass(frozen=True, slots=True)
class LatencyTolerance:
    """How far above the pool median a replica may be before it counts as slow."""

    latency_tolerance: float = 0.10  # relative: 10% above the median is still "the same"
    ttft_floor_ms: float = 20.0  # ...and never less than this many ms of TTFT
    tpot_floor_ms: float = 2.0  # ...or of TPOT

    def __post_init__(self) -> None:
        values = (self.latency_tolerance, self.ttft_floor_ms, self.tpot_floor_ms)
        if not all(math.isfinite(v) and v >= 0.0 for v in values):
            raise ValueError(f"latency tolerances must be finite and >= 0: {self}")


@dataclass(frozen=True, slots=True)
class PoolLatency:
    """The medians a model's replicas are judged against (``None``: nobody knows)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value) or value < 0.0:
        return None
    return value


def allowance(pool: float, rel: float, floor: float) -> float:
    return max(pool * rel, floor)


def slow_factor(value: float | None, pool: float | None, rel: float, floor: float) -> float:
    """Weight factor in (0, 1]: 1 while ``value`` is within the allowance above ``pool``."""
    p = _finite(pool)
    if value is None or p is None or math.isnan(value) or value < 0.0:
        return 1.0  # unknown (or a broken metric) must not take capacity away
    if math.isinf(value):
        return 0.0  # the caller's floor (min_weight) applies
    excess_allowed = allowance(p, rel, floor)
    if value <= p + excess_allowed:
        return 1.0
    return p / (value - excess_allowed)  # value - allowance > p >= 0: in [0, 1)


def too_slow(value: float | None, pool: float | None, rel: float, floor: float) -> bool:
    """Beyond the allowance (an infinite value against a known pool is too slow)."""
    if value is None or pool is None or math.isnan(value) or _finite(pool) is None:
        return False
    return value > pool + allowance(pool, rel, floor)


def latency_factor(obs: Observation, pool: PoolLatency | None, t: LatencyTolerance) -> float:
    """Product of the TTFT and TPOT factors of one replica against its pool."""
    if pool is None:
        return 1.0
    rel = t.latency_tolerance
    return slow_factor(obs.ttft_ms, pool.ttft_ms, rel, t.ttft_floor_ms) * slow_factor(
        obs.tpot_ms, pool.tpot_ms, rel, t.tpot_floor_ms
    )


def is_reference(role: Role, admin: AdminState, obs: Observation) -> bool:
    """Its latency is a fair reference for its peers: serving, active, enabled (drained and
    standby replicas carry no real traffic). A replica removed for GPU memory stays in."""
    return obs.level.serving and role is Role.ACTIVE and admin is AdminState.ENABLED


def _median(values: Iterable[float | None]) -> float | None:
    # An infinite figure would drag the median up and so make its own replica look fine;
    # leave it out, it still scores 0 against the rest.
    known = [v for v in (_finite(x) for x in values) if v is not None]
    return statistics.median(known) if known else None


def pool_latency(observations: Iterable[Observation]) -> PoolLatency:
    """Median TTFT and TPOT of the reference replicas given (the caller filters)."""
    obs = list(observations)
    return PoolLatency(_median(o.ttft_ms for o in obs), _median(o.tpot_ms for o in obs))
