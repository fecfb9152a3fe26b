"""Replica identity, roles and observed health: the words health, policy and router share."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class HealthLevel(enum.IntEnum):
    """How far up the health ladder a replica has climbed.

    Ordered so that ``level >= HealthLevel.DEGRADED`` means "may serve traffic": only L1/L2
    failures remove a replica, L3 failures merely lower its weight.
    """

    DOWN = 0  # L1 failed: the process does not answer (refused, reset, /health not 200)
    UNREADY = 1  # L1 passes, L2 not (yet): loading, or the model returns nothing usable
    DEGRADED = 2  # L1 and L2 pass, L3 (latency, GPU memory, KV cache, queue) out of range
    HEALTHY = 3  # every layer passes

    @property
    def serving(self) -> bool:
        return self >= HealthLevel.DEGRADED


class Role(enum.StrEnum):
    ACTIVE = "active"
    STANDBY = "standby"


class AdminState(enum.StrEnum):
    ENABLED = "enabled"
    DRAINED = "drained"


ENGINES = ("vllm", "sglang", "tgi", "llamacpp", "openai")


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """What the operator configured about one replica; never changes at run time."""

    name: str
    model: str
    url: str  # base URL, e.g. "http://127.0.0.1:8001" (no trailing slash, no /v1)
    engine: str = "vllm"
    role: Role = Role.ACTIVE
    gpu: int | None = None
    node: str = ""
    l2_path: str | None = None  # where this node's L2 prompt goes; local, never replicated


@dataclass(frozen=True, slots=True)
class Observation:
    """What the health checker last saw of a replica. ``None`` means "not known"."""

    level: HealthLevel = HealthLevel.DOWN
    # GPU memory pressure 0..1, the figure the prepare/reduce/remove marks act on: KV-cache use
    # inside the reservation for engines that reserve memory, NVML used/total for the others
    # (docs/health-signals.md)
    gpu_mem_frac: float | None = None
    kv_usage: float | None = None  # 0..1 KV-cache usage reported by the engine
    queue_depth: float | None = None  # requests waiting in the engine's queue
    running: float | None = None  # requests the engine is running now
    latency_ms: float | None = None  # rolling end-to-end latency of recent requests (shown only)
    ttft_ms: float | None = None  # time to first token: streamed answers, else the engine's
    tpot_ms: float | None = None  # time per output token: answers' usage, else the engine's
    # Bounds of a figure read from the engine's histogram, which is only known to lie within its
    # bucket: lo set means "from a histogram" (hi None: the +Inf bucket); both None: measured.
    ttft_lo_ms: float | None = None
    ttft_hi_ms: float | None = None
    tpot_lo_ms: float | None = None
    tpot_hi_ms: float | None = None
    gpu_growth: float | None = None  # device memory grown past its learned baseline, of total
    gpu_removed: bool = False  # GPU memory passed the remove mark and has not recovered yet
    reason: str = ""  # why the level is what it is, for people


def may_serve(
    role: Role,
    admin: AdminState,
    obs: Observation,
    node_lost: bool = False,
    process_up: bool = True,
) -> bool:
    """The one rule for "may this replica take traffic": active, not drained, healthy enough,
    not removed for GPU memory, on a node the cluster has not lost, and its process wanted
    running and not known to be asleep, stopped or restarting (``process_up``; replicas
    without an actuator are always up)."""
    return (
        role is Role.ACTIVE
        and admin is AdminState.ENABLED
        and obs.level >= HealthLevel.DEGRADED
        and not obs.gpu_removed
        and not node_lost
        and process_up
    )
