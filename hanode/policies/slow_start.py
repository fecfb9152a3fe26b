"""Slow start (Envoy's): a replica that has just come (back) into service gets a growing
share of its weight over ``window_s`` instead of a full share at once, so a freshly started,
restarted or woken engine (cold caches, first CUDA graphs) is not flooded.

Pure: the caller says how long the replica has been serving (``elapsed_s``, measured on its
own monotonic clock); nothing here reads a clock. The factor follows Envoy's
``max(min_factor, (elapsed / window) ** (1 / aggression))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SlowStart:
    window_s: float  # [health] slow_start_s; 0 turns slow start off
    min_factor: float = 0.1  # Envoy's min_weight_percent (10%): a new replica is never at 0
    aggression: float = 1.0  # 1: linear; larger: faster at first

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_s) and self.window_s >= 0.0):
            raise ValueError(f"slow start window must be >= 0, got {self.window_s}")
        if not 0.0 < self.min_factor <= 1.0:
            raise ValueError(f"min_factor must be within (0, 1], got {self.min_factor}")
        if not (math.isfinite(self.aggression) and self.aggression > 0.0):
            raise ValueError(f"aggression must be > 0, got {self.aggression}")


def slow_start_factor(elapsed_s: float, policy: SlowStart) -> float:
    """The share of its weight a replica gets ``elapsed_s`` after it started serving."""
    if policy.window_s <= 0.0 or not elapsed_s < policy.window_s:
        return 1.0  # off, ramp over (NaN counts as over: never stuck at a low weight)
    share = max(0.0, elapsed_s) / policy.window_s
    ramped: float = share ** (1.0 / policy.aggression)
    return max(policy.min_factor, ramped)


def ramping(since: Mapping[str, float], now: float, policy: SlowStart) -> dict[str, float]:
    """Factors below 1 of the replicas still in their ramp (name -> factor), from the time
    each started serving (``since``, the caller's monotonic clock)."""
    out: dict[str, float] = {}
    for name, start in since.items():
        factor = slow_start_factor(now - start, policy)
        if factor < 1.0:
            out[name] = factor
    return out
