"""L3: is a serving replica's performance in range?

Out of range only lowers a replica to DEGRADED (and its weight); it never removes it. Every
broken limit is named in the reason so that an operator sees all of them at once, not only the
first. Unknown values (``None``, or NaN from a broken metric) pass: missing data must not take
capacity away.
"""

from __future__ import annotations

from dataclasses import dataclass

from hanode.pool.replica import Observation


@dataclass(frozen=True, slots=True)
class L3Thresholds:
    """Upper limits; a value strictly above its limit is out of range."""

    latency_ms: float = 2000.0
    ttft_ms: float = 1000.0
    kv_usage: float = 0.90
    queue_depth: float = 32.0
    gpu_mem: float = 0.90


def _pair(value: float, limit: float, decimals: int) -> tuple[str, str]:
    """Format value and limit so they never read the same: "0.9004 > 0.9000", not "0.90 > 0.90"."""
    for d in range(decimals, decimals + 7):
        v, lim = f"{value:.{d}f}", f"{limit:.{d}f}"
        if v != lim:
            return v, lim
    return repr(value), repr(limit)


def evaluate_l3(obs: Observation, t: L3Thresholds) -> tuple[bool, str]:
    """Return ``(in_range, reason)``; reason is like ``"latency 2500ms > 2000ms; kv 0.95 > 0.90"``
    and empty when every known value is in range."""
    broken: list[str] = []
    checks = (
        ("latency", obs.latency_ms, t.latency_ms, 0, "ms"),
        ("ttft", obs.ttft_ms, t.ttft_ms, 0, "ms"),
        ("kv", obs.kv_usage, t.kv_usage, 2, ""),
        ("queue", obs.queue_depth, t.queue_depth, 0, ""),
        ("gpu_mem", obs.gpu_mem_frac, t.gpu_mem, 2, ""),
    )
    for label, value, limit, decimals, unit in checks:
        if value is not None and value > limit:  # NaN compares False: unknown passes
            v, lim = _pair(value, limit, decimals)
            broken.append(f"{label} {v}{unit} > {lim}{unit}")
    return (not broken, "; ".join(broken))
