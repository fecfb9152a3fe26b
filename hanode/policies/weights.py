"""Observations -> traffic weights.

A weight says how much of a model's traffic a replica should get, in ``[0, 1]``. Zero removes the
replica from the route (it is not serving, an operator drained it, it is a standby, or its GPU
memory is so full that one more request may OOM it). Any other replica keeps at least
``min_weight``: performance problems (L3) shift traffic away but never remove a replica, so it
keeps getting enough requests for its latency to be measured again.

Weights are a product of independent factors so that each signal can only pull a weight down and
a single bad signal is enough to do so. Time to first token and time per output token are
judged against the median of the model's own eligible replicas, with a tolerance
(:mod:`hanode.policies.latency`), rather than an absolute number, because what is "slow" depends
on the model, the hardware and the prompt mix; end-to-end latency is not judged at all (a long
answer is not a slow replica). ``gpu_mem_frac`` is the memory *pressure* figure
(docs/health-signals.md): KV-cache use inside the reservation for engines that reserve memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from hanode.policies.latency import (
    LatencyTolerance,
    PoolLatency,
    is_reference,
    latency_factor,
    pool_latency,
)
from hanode.pool.replica import AdminState, Observation, Role, may_serve

# Factor values at the edges of the bands; part of the policy, not of configuration.
_GPU_PREPARE_FLOOR = 0.7  # factor reached at gpu_mem_reduce, falling linearly from 1.0
_GPU_REDUCE_FACTOR = 0.25  # flat factor between gpu_mem_reduce and gpu_mem_remove
_KV_FULL_FACTOR = 0.3  # factor at 100% KV usage, falling linearly from 1.0 at kv_high


@dataclass(frozen=True, slots=True)
class WeightThresholds:
    """Where the weight factors bend. Validated so that a bad config fails at load, not per call."""

    gpu_mem_prepare: float = 0.80  # at/above: weight starts to ramp down (1.0 -> 0.7)
    gpu_mem_reduce: float = 0.90  # at/above: traffic cut hard (factor 0.25)
    gpu_mem_remove: float = 0.95  # at/above: weight 0
    kv_high: float = 0.85  # KV-cache usage above which weight falls (to 0.3 at 1.0)
    queue_high: float = 16.0  # waiting requests at which weight is halved
    min_weight: float = 0.05  # floor for a serving replica (L3 problems lower, never remove)
    latency: LatencyTolerance = field(default_factory=LatencyTolerance)  # TTFT/TPOT vs pool

    def __post_init__(self) -> None:
        values = (
            self.gpu_mem_prepare,
            self.gpu_mem_reduce,
            self.gpu_mem_remove,
            self.kv_high,
            self.queue_high,
            self.min_weight,
        )
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"weight thresholds must be finite: {self}")
        if not 0.0 <= self.gpu_mem_prepare <= self.gpu_mem_reduce <= self.gpu_mem_remove:
            raise ValueError(
                "need 0 <= gpu_mem_prepare <= gpu_mem_reduce <= gpu_mem_remove, got "
                f"{self.gpu_mem_prepare}, {self.gpu_mem_reduce}, {self.gpu_mem_remove}"
            )
        if not 0.0 <= self.kv_high <= 1.0:
            raise ValueError(f"kv_high must be within [0, 1], got {self.kv_high}")
        if not self.queue_high > 0.0:
            raise ValueError(f"queue_high must be > 0, got {self.queue_high}")
        if not 0.0 < self.min_weight <= 1.0:
            raise ValueError(f"min_weight must be within (0, 1], got {self.min_weight}")


@dataclass(frozen=True, slots=True)
class WeightInput:
    """Everything the weight of one replica depends on (besides its peers)."""

    model: str
    role: Role
    admin: AdminState
    observation: Observation


def _known(value: float | None) -> float | None:
    """NaN and negative numbers come from broken metrics; treat them as "not known"."""
    if value is None or value != value or value < 0.0:
        return None
    return value


def _gpu_factor(gpu: float, t: WeightThresholds) -> float:
    if gpu < t.gpu_mem_prepare:
        return 1.0
    if gpu < t.gpu_mem_reduce:
        # prepare < reduce here (else the first branch or this one is empty), so no zero division
        span = (gpu - t.gpu_mem_prepare) / (t.gpu_mem_reduce - t.gpu_mem_prepare)
        return 1.0 - (1.0 - _GPU_PREPARE_FLOOR) * span
    return _GPU_REDUCE_FACTOR


def _kv_factor(kv: float, t: WeightThresholds) -> float:
    if kv <= t.kv_high:
        return 1.0
    kv = min(kv, 1.0)  # kv > kv_high implies kv_high < 1, so the division below is safe
    return 1.0 - (1.0 - _KV_FULL_FACTOR) * (kv - t.kv_high) / (1.0 - t.kv_high)


def replica_weight(obs: Observation, pool: PoolLatency | None, t: WeightThresholds) -> float:
    """Weight of one replica from its observation and its model's pool TTFT/TPOT medians.

    Role and admin state are not looked at here (see :func:`compute_weights`, which asks
    :func:`~hanode.pool.replica.may_serve` first); an observation that may not serve weighs 0.
    """
    if not obs.level.serving or obs.gpu_removed:
        return 0.0  # gpu_removed: past the remove mark and not yet below the recover mark
    weight = 1.0

    # Memory pressure and KV use are two views of one resource (for an engine that reserves
    # memory they are the same figure), so the weaker factor decides instead of their product.
    memory = 1.0
    gpu = _known(obs.gpu_mem_frac)
    if gpu is not None:
        if gpu >= t.gpu_mem_remove:
            return 0.0
        memory = _gpu_factor(gpu, t)

    kv = _known(obs.kv_usage)
    if kv is not None:
        memory = min(memory, _kv_factor(kv, t))
    weight *= memory

    queue = _known(obs.queue_depth)
    if queue is not None:
        weight *= 1.0 / (1.0 + queue / t.queue_high)  # inf queue -> 0 -> min_weight

    weight *= latency_factor(obs, pool, t.latency)

    return max(t.min_weight, weight)


def compute_weights(
    inputs: Mapping[str, WeightInput], t: WeightThresholds = WeightThresholds()
) -> dict[str, float]:
    """Weights for every replica in ``inputs`` (name -> weight in ``[0, 1]``).

    Pool TTFT/TPOT for a model are the medians of its serving, active, enabled replicas
    (including the one being weighed; :func:`~hanode.policies.latency.is_reference`).
    """
    by_model: dict[str, list[Observation]] = {}
    for inp in inputs.values():
        if is_reference(inp.role, inp.admin, inp.observation):
            by_model.setdefault(inp.model, []).append(inp.observation)
    pool = {model: pool_latency(observations) for model, observations in by_model.items()}

    weights: dict[str, float] = {}
    for name, inp in inputs.items():
        if not may_serve(inp.role, inp.admin, inp.observation):
            weights[name] = 0.0
        else:
            weights[name] = replica_weight(inp.observation, pool.get(inp.model), t)
    return weights
