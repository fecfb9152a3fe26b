"""Combine the three probe layers into one :class:`HealthLevel`."""

from __future__ import annotations

from hanode.pool.replica import HealthLevel


def combine_level(l1_up: bool, l2_up: bool, l3_ok: bool) -> HealthLevel:
    """The lowest failing layer decides: a lower layer failing makes the higher ones moot
    (a process that does not answer cannot be judged on latency)."""
    if not l1_up:
        return HealthLevel.DOWN
    if not l2_up:
        return HealthLevel.UNREADY
    if not l3_ok:
        return HealthLevel.DEGRADED
    return HealthLevel.HEALTHY
