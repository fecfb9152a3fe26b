"""Is a replica slow? Time to first token and time per output token against its peers.

End-to-end latency says more about the answer's length than about the replica, so it is shown
but never judged. A replica is slow when its TTFT or its TPOT is above the pool's median by more
than an allowance: a relative tolerance, and never less than an absolute floor, so that 4 ms
against 3 ms (noise on a fast model) moves nothing. Beyond the allowance the weight factor is
``pool / (value - allowance)``: 1 at the edge (no jump), about ``pool / value`` far from it.

A figure read from an engine's histogram is only known to lie within its bucket (vLLM's first
TPOT bucket is 0-10 ms: a 1.5 ms TPOT reads as 5 ms after interpolation). So every figure has
bounds (a measured one is its own bounds): a replica is slow only when even its lower bound is
past the allowance above what the pool's median is at most, and histogram figures stay out of
the pool median whenever measured ones exist. "Slow" is then never a resolution artefact.

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
    """The medians a model's replicas are judged against (``None``: nobody knows).

    ``*_hi_ms``: set when the median comes from engine histograms only (no replica measured
    one): what the true median is at most (``inf``: unbounded). ``None``: a measured median."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    ttft_hi_ms: float | None = None
    tpot_hi_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Figure:
    """One TTFT or TPOT figure: ``value`` is the estimate shown; the truth lies in
    ``[lo, hi]``. ``exact``: measured from answers (``lo == value == hi``), not a bucket."""

    value: float
    lo: float
    hi: float
    exact: bool


def figure(value: float | None, lo: float | None = None, hi: float | None = None) -> Figure | None:
    """The figure an observation carries: ``lo`` set means it came from a histogram bucket
    (``hi`` ``None``: the ``+Inf`` bucket); bounds that do not hold ``value`` are widened."""
    v = None if value is None or math.isnan(value) or value < 0.0 else value
    if v is None:
        return None
    if lo is None:
        return Figure(v, v, v, exact=True)
    low = lo if not math.isnan(lo) and lo >= 0.0 else 0.0
    high = hi if hi is not None and not math.isnan(hi) else math.inf
    return Figure(v, min(low, v), max(high, v), exact=False)


def ttft_figure(obs: Observation) -> Figure | None:
    return figure(obs.ttft_ms, obs.ttft_lo_ms, obs.ttft_hi_ms)


def tpot_figure(obs: Observation) -> Figure | None:
    return figure(obs.tpot_ms, obs.tpot_lo_ms, obs.tpot_hi_ms)


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


def judged(
    fig: Figure | None, median: float | None, hi: float | None
) -> tuple[float | None, float | None]:
    """What is compared for "slow": the figure's lower bound against what the pool median is
    at most, so neither a coarse bucket of its own nor the pool's can make a replica slow."""
    return (fig.lo if fig is not None else None), (hi if hi is not None else median)


def figure_factor(
    fig: Figure | None, median: float | None, hi: float | None, rel: float, floor: float
) -> float:
    """:func:`slow_factor` on the bounds (:func:`judged`)."""
    value, ref = judged(fig, median, hi)
    return slow_factor(value, ref, rel, floor)


def figure_too_slow(
    fig: Figure | None, median: float | None, hi: float | None, rel: float, floor: float
) -> bool:
    """:func:`too_slow` on the bounds (:func:`judged`)."""
    value, ref = judged(fig, median, hi)
    return too_slow(value, ref, rel, floor)


def latency_factor(obs: Observation, pool: PoolLatency | None, t: LatencyTolerance) -> float:
    """Product of the TTFT and TPOT factors of one replica against its pool."""
    if pool is None:
        return 1.0
    rel = t.latency_tolerance
    ttft = figure_factor(ttft_figure(obs), pool.ttft_ms, pool.ttft_hi_ms, rel, t.ttft_floor_ms)
    tpot = figure_factor(tpot_figure(obs), pool.tpot_ms, pool.tpot_hi_ms, rel, t.tpot_floor_ms)
    return ttft * tpot


def is_reference(role: Role, admin: AdminState, obs: Observation) -> bool:
    """Its latency is a fair reference for its peers: serving, active, enabled (drained and
    standby replicas carry no real traffic). A replica removed for GPU memory stays in."""
    return obs.level.serving and role is Role.ACTIVE and admin is AdminState.ENABLED


def _median(figures: Iterable[Figure | None]) -> tuple[float | None, float | None]:
    """``(median, hi)``: of the measured figures when there are any (a histogram estimate
    would drag it either way); else of the histogram estimates, with the median of their upper
    bounds as ``hi`` (the median of upper bounds bounds the true median from above)."""
    # An infinite figure would drag the median up and so make its own replica look fine;
    # leave it out, it still scores 0 against the rest.
    known = [f for f in figures if f is not None and math.isfinite(f.value)]
    exact = [f.value for f in known if f.exact]
    if exact:
        return statistics.median(exact), None
    if not known:
        return None, None
    return statistics.median(f.value for f in known), statistics.median(f.hi for f in known)


def pool_latency(observations: Iterable[Observation]) -> PoolLatency:
    """Median TTFT and TPOT of the reference replicas given (the caller filters)."""
    obs = list(observations)
    ttft, ttft_hi = _median(ttft_figure(o) for o in obs)
    tpot, tpot_hi = _median(tpot_figure(o) for o in obs)
    return PoolLatency(ttft, tpot, ttft_hi, tpot_hi)
