"""L3: is a serving replica's performance in range?

Out of range only lowers a replica to DEGRADED (and its weight); it never removes it. Every
broken limit is named in the reason so that an operator sees all of them at once, not only the
first. Unknown values (``None``, or NaN from a broken metric) pass: missing data must not take
capacity away. Time to first token and time per output token are judged against the model's
pool with the weights' own rule (:mod:`hanode.policies.latency`); end-to-end latency is not
judged (a long answer is not a slow replica). ``gpu_mem`` acts on the pressure figure
(KV use inside the reservation for engines that reserve), ``gpu_growth`` on device memory grown
past its learned baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hanode.policies.latency import (
    LatencyTolerance,
    PoolLatency,
    allowance,
    figure_too_slow,
    judged,
    tpot_figure,
    ttft_figure,
)
from hanode.pool.replica import Observation


@dataclass(frozen=True, slots=True)
class L3Thresholds:
    """Upper limits; a value strictly above its limit is out of range."""

    ttft_ms: float = 1000.0  # an absolute ceiling too: a pool that is slow as a whole
    kv_usage: float = 0.90
    queue_depth: float = 32.0
    gpu_mem: float = 0.90
    gpu_growth: float = 0.05
    latency: LatencyTolerance = field(default_factory=LatencyTolerance)


def _pair(value: float, limit: float, decimals: int) -> tuple[str, str]:
    """Format value and limit so they never read the same: "0.9004 > 0.9000", not "0.90 > 0.90"."""
    for d in range(decimals, decimals + 7):
        v, lim = f"{value:.{d}f}", f"{limit:.{d}f}"
        if v != lim:
            return v, lim
    return repr(value), repr(limit)


def evaluate_l3(
    obs: Observation, t: L3Thresholds, pool: PoolLatency | None = None
) -> tuple[bool, str]:
    """Return ``(in_range, reason)``; reason is like ``"tpot 15.0ms > pool 5.0ms + 2.0ms;
    kv 0.95 > 0.90"`` and empty when every known value is in range."""
    broken: list[str] = []
    checks = (
        ("ttft", obs.ttft_ms, t.ttft_ms, 0, "ms"),
        ("kv", obs.kv_usage, t.kv_usage, 2, ""),
        ("queue", obs.queue_depth, t.queue_depth, 0, ""),
        ("gpu_mem", obs.gpu_mem_frac, t.gpu_mem, 2, ""),
        ("gpu_growth", obs.gpu_growth, t.gpu_growth, 2, ""),
    )
    for label, value, limit, decimals, unit in checks:
        if value is not None and value > limit:  # NaN compares False: unknown passes
            v, lim = _pair(value, limit, decimals)
            broken.append(f"{label} {v}{unit} > {lim}{unit}")
    if pool is not None:
        rel = t.latency.latency_tolerance
        relative = (
            ("ttft", ttft_figure(obs), pool.ttft_ms, pool.ttft_hi_ms, t.latency.ttft_floor_ms),
            ("tpot", tpot_figure(obs), pool.tpot_ms, pool.tpot_hi_ms, t.latency.tpot_floor_ms),
        )
        for label, fig, median, hi, floor in relative:
            if fig is None or not figure_too_slow(fig, median, hi, rel, floor):
                continue
            value, ref = judged(fig, median, hi)
            if value is None or ref is None:  # too slow implies both known; for mypy
                continue
            extra = allowance(ref, rel, floor)
            # A histogram figure is only known to be at least its bucket's lower edge, a pool
            # median of histograms at most the median of their upper edges: say which.
            mine = f"{value:.1f}ms" if fig.exact else f">= {value:.1f}ms (engine histogram)"
            theirs = f"{ref:.1f}ms" if hi is None else f"<= {ref:.1f}ms (engine histograms)"
            broken.append(f"{label} {mine} > pool {theirs} + {extra:.1f}ms")
    return (not broken, "; ".join(broken))
