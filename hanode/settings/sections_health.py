"""The sections that configure health and failure handling: [health], [thresholds], [slo],
[retry], [breaker]."""

from __future__ import annotations

from dataclasses import dataclass

from hanode.health.checker import GpuMarks, HealthSettings
from hanode.policies.breaker import BreakerConfig
from hanode.policies.l3 import L3Thresholds
from hanode.policies.latency import LatencyTolerance
from hanode.policies.retry import RetryPolicy
from hanode.policies.slow_start import SlowStart
from hanode.policies.weights import WeightThresholds
from hanode.router.frontdoor import RouterSettings
from hanode.settings.reader import Table, fmt_num
from hanode.settings.schema import bind, setting, settings
from hanode.settings.value_checks import period


@dataclass(frozen=True, slots=True)
@settings
class HealthConfig:
    interval_s: float = setting(
        "L1 probe period (engine /health)", gt=0, check=period, to=HealthSettings
    )
    timeout_s: float = setting("L1 probe timeout", gt=0, check=period, to=HealthSettings)
    rise: int = setting(
        "consecutive successes before a replica is trusted again", ge=1, to=HealthSettings
    )
    fall: int = setting(
        "consecutive failures before a replica is taken out", ge=1, to=HealthSettings
    )
    l2_interval_s: float = setting(
        "L2 probe period (a tiny real completion)", gt=0, check=period, to=HealthSettings
    )
    l2_timeout_s: float = setting("L2 probe timeout", gt=0, check=period, to=HealthSettings)
    l2_prompt: str = setting("L2 probe prompt", to=HealthSettings)
    l2_max_tokens: int = setting("L2 probe max_tokens", ge=1, to=HealthSettings)
    passive_window_s: float = setting(
        "window of live-traffic outcomes used as passive health",
        default=30.0,
        gt=0,
        check=period,
    )
    slow_start_s: float = setting(
        "a started, restarted or woken replica ramps from 10% to its full weight over this "
        "long once it passes L2 (Envoy's slow start); 0 = at once",
        default=30.0,
        ge=0,
        to=bind(SlowStart, "window_s"),
    )


@dataclass(frozen=True, slots=True)
@settings
class ThresholdsConfig:
    ttft_ms: float = setting(
        "time to first token considered slow whatever the peers (L3; peers are compared too)",
        gt=0,
        to=L3Thresholds,
    )
    latency_tolerance: float = setting(
        "TTFT and TPOT count as slow only this far (relative) above the model's median...",
        ge=0,
        le=10,
        to=LatencyTolerance,
    )
    ttft_floor_ms: float = setting(
        "...and at least this many ms of TTFT above it", ge=0, to=LatencyTolerance
    )
    tpot_floor_ms: float = setting(
        "...or this many ms of time per output token", ge=0, to=LatencyTolerance
    )
    kv_usage: float = setting(
        "KV-cache usage (0..1) considered saturated", gt=0, le=1, to=L3Thresholds
    )
    queue_depth: float = setting("engine queue length considered backed up", gt=0, to=L3Thresholds)
    gpu_mem_prepare: float = setting(
        "GPU memory pressure (KV use inside the reservation for vLLM, SGLang, TGI; used/total "
        "otherwise): early warning, capacity event, weight ramps down (must be < reduce)",
        gt=0,
        le=1,
        to=(WeightThresholds, bind(GpuMarks, "prepare")),
    )
    gpu_mem_reduce: float = setting(
        "GPU memory fraction: traffic cut hard, L3 out of range (must be < remove)",
        gt=0,
        le=1,
        to=(WeightThresholds, bind(L3Thresholds, "gpu_mem"), bind(GpuMarks, "reduce")),
    )
    gpu_mem_remove: float = setting(
        "GPU memory fraction: taken out of rotation",
        gt=0,
        le=1,
        to=(WeightThresholds, bind(GpuMarks, "remove")),
    )
    gpu_mem_recover: float = setting(
        "GPU memory fraction: back into rotation after a removal (must be < remove)",
        default=0.90,
        gt=0,
        le=1,
        to=bind(GpuMarks, "recover"),
    )
    gpu_growth: float = setting(
        "device memory grown past its baseline (learned once serving), as a share of the GPU: "
        "gpu_growth event, L3 out of range",
        gt=0,
        le=1,
        to=L3Thresholds,
    )
    kv_high: float = setting(
        "weight falls above this KV-cache usage (to 0.3 at 100%)",
        gt=0,
        le=1,
        to=WeightThresholds,
    )
    queue_high: float = setting(
        "waiting requests at which a replica's weight is halved", gt=0, to=WeightThresholds
    )


def check_thresholds(t: Table, cfg: ThresholdsConfig) -> ThresholdsConfig:
    def below(low: str, high: str) -> None:
        # Only compare values that are individually valid, to avoid a cascade of errors.
        if low in t.bad or high in t.bad:
            return
        lo, hi = getattr(cfg, low), getattr(cfg, high)
        if lo >= hi:
            lo_d = "" if t.has(low) else ", the default"
            hi_d = "" if t.has(high) else ", the default"
            key = low if t.has(low) else high
            t.error(
                key,
                f"{low} ({fmt_num(lo)}{lo_d}) must be below {high} ({fmt_num(hi)}{hi_d})",
                mark_bad=False,
            )

    below("gpu_mem_prepare", "gpu_mem_reduce")
    below("gpu_mem_reduce", "gpu_mem_remove")
    # Hysteresis: a replica removed at `remove` comes back only once below `recover`.
    below("gpu_mem_recover", "gpu_mem_remove")
    return cfg


_SLO_MS = 1000.0  # the file says milliseconds, the router counts seconds


@dataclass(frozen=True, slots=True)
@settings
class SloConfig:
    latency_ms: float = setting(
        "a request slower than this missed the SLO",
        gt=0,
        to=bind(RouterSettings, "slo_latency_s", scale=_SLO_MS),
    )
    ttft_ms: float = setting(
        "a stream with a slower first token missed the SLO",
        gt=0,
        to=bind(RouterSettings, "slo_ttft_s", scale=_SLO_MS),
    )


@dataclass(frozen=True, slots=True)
@settings
class RetryConfig:
    max_attempts: int = setting("tries per request, the first included", ge=1, to=RetryPolicy)
    per_try_timeout_s: float = setting(
        "time to the first response byte of one try", gt=0, check=period, to=RetryPolicy
    )
    backoff_base_s: float = setting(
        "full-jitter exponential backoff between tries...",
        gt=0,
        to=bind(RetryPolicy, "base_backoff_s"),
    )
    backoff_cap_s: float = setting(
        "...never longer than this", gt=0, to=bind(RetryPolicy, "cap_backoff_s")
    )
    budget_ratio: float = setting(
        "retries allowed as a share of recent requests...",
        gt=0,
        le=1,
        to=bind(RouterSettings, "retry_budget_ratio"),
    )
    budget_min_per_s: float = setting(
        "...plus this floor per second, so a quiet node can still retry",
        gt=0,
        to=bind(RouterSettings, "retry_budget_min_per_s"),
    )


@dataclass(frozen=True, slots=True)
@settings
class BreakerSettings:
    consecutive_failures: int = setting(
        "5xx / connection resets in a row before opening (refused: at once)",
        ge=1,
        to=BreakerConfig,
    )
    timeout_trip_count: int = setting(
        "per-try timeouts in a row before opening", ge=1, to=BreakerConfig
    )
    oom_trip_count: int = setting(
        "GPU OOMs within oom_window_s before opening", ge=1, to=BreakerConfig
    )
    oom_window_s: float = setting("window of oom_trip_count", gt=0, to=BreakerConfig)
    oom_weight_cut: float = setting(
        "weight factor right after an OOM...", gt=0, le=1, to=BreakerConfig
    )
    oom_recovery_s: float = setting("...climbing back to 1 over this long", gt=0, to=BreakerConfig)
    busy_backoff_s: float = setting("pause after a 503 busy", gt=0, to=BreakerConfig)
    default_retry_after_s: float = setting(
        "pause after a 429 without Retry-After", gt=0, to=BreakerConfig
    )
    max_pause_s: float = setting("longest pause a Retry-After may ask", gt=0, to=BreakerConfig)
    open_base_s: float = setting(
        "first open period; doubles after each failed probe", gt=0, to=BreakerConfig
    )
    open_max_s: float = setting("longest open period", gt=0, to=BreakerConfig)
    half_open_probes: int = setting(
        "concurrent probe requests while half-open", ge=1, to=BreakerConfig
    )
    max_ejection_percent: float = setting(
        "breakers opened by OTHER routers eject at most this share of a model's serving "
        "replicas here (own breakers: no cap)",
        default=50.0,
        ge=0,
        le=100,
    )
