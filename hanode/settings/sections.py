"""Every section of hanode.toml, declared once (see :mod:`hanode.settings.schema`).

A key handed to a policy or runtime object names it with ``to=``; its default is that object's
own. Keys only the daemon wiring reads (addresses, paths, cluster timings) carry ``default=``.
Rules that involve more than one key are the ``_check_*`` functions next to their section.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hanode.addresses import HostPort, is_wildcard_host, normalize_url, parse_host
from hanode.health.checker import GpuMarks, HealthSettings
from hanode.http.server import ServerLimits
from hanode.policies.breaker import BreakerConfig
from hanode.policies.l3 import L3Thresholds
from hanode.policies.retry import RetryPolicy
from hanode.policies.weights import WeightThresholds
from hanode.pool.replica import ENGINES, ReplicaSpec, Role
from hanode.router.frontdoor import RouterSettings
from hanode.router.validation import RequestLimits
from hanode.settings.reader import Table, fmt_num
from hanode.settings.schema import Section, bind, required, setting, settings

NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
REDUNDANCY_MODES = ("n_plus_1", "primary_standby", "active_active")


def _advertise(text: str) -> tuple[str, str]:
    host, problem = parse_host(text)
    if not problem and is_wildcard_host(host):
        problem = (
            f"{text!r} names no address; give this host's address on the cluster network "
            "(or 127.0.0.1 for a cluster that lives on one host)"
        )
    return host, problem


@dataclass(frozen=True, slots=True)
@settings
class NodeConfig:
    name: str = required(
        "unique in the cluster; letters, digits, _ . -", example="gpu-node-1", pattern=NAME_RE
    )
    data_dir: Path = required(
        "state kept across restarts (systemd StateDirectory)", example="/var/lib/hanode"
    )
    advertise_host: str | None = setting(
        "this host's address on the cluster network: replaces loopback replica URLs and "
        "wildcard listens in what other nodes dial; required under [cluster] when either is used",
        default=None,
        check=_advertise,
        example="10.0.0.11",
    )


# Intervals and timeouts below this are mistakes (1e-9 s spun a probe loop at 65% CPU).
MIN_PERIOD_S = 0.05


def _period(value: float) -> tuple[float, str]:
    """A lower bound for periods and timeouts that gt=0 alone lets through."""
    if value < MIN_PERIOD_S:
        return value, f"must be at least {MIN_PERIOD_S:g} (seconds), got {value:g}"
    return value, ""


@dataclass(frozen=True, slots=True)
@settings
class RouterConfig:
    listen: HostPort = required(
        'OpenAI-compatible front door, "HOST:PORT" or "[::1]:PORT"', example="0.0.0.0:8080"
    )
    api_keys: tuple[str, ...] = setting(
        "accepted bearer tokens; empty (and no key file) = no authentication", to=RouterSettings
    )
    api_key_file: Path | None = setting(
        "one key per line, '#' comments; merged with api_keys",
        default=None,
        example="/etc/hanode/api_keys",
    )
    max_body_bytes: int = setting("largest request body accepted", ge=1, to=ServerLimits)
    max_header_bytes: int = setting(
        "largest request head (request line + headers)", ge=1, to=ServerLimits
    )
    max_connections: int = setting("client connections held open at once", ge=1, to=ServerLimits)
    request_timeout_s: float = setting(
        "overall deadline of one request, streaming included",
        gt=0,
        check=_period,
        to=RouterSettings,
    )
    stream_idle_timeout_s: float = setting(
        "silence allowed inside an answer that has begun before it is cut (a stream with an "
        "error event); the first token may take [retry].per_try_timeout_s",
        gt=0,
        to=RouterSettings,
    )
    connect_timeout_s: float = setting(
        "TCP connect to a replica before trying another", gt=0, check=_period, to=RouterSettings
    )
    header_timeout_s: float = setting(
        "time a client has to send a whole request", gt=0, check=_period, to=ServerLimits
    )
    idle_timeout_s: float = setting(
        "keep-alive connection idle time before closing", gt=0, check=_period, to=ServerLimits
    )
    max_tokens_limit: int = setting(
        "requests asking for more max_tokens are rejected (400)",
        ge=1,
        to=bind(RequestLimits, "max_tokens"),
    )
    max_n: int = setting('largest "n" (choices per request) accepted', ge=1, to=RequestLimits)


@dataclass(frozen=True, slots=True)
@settings
class MetricsConfig:
    listen: HostPort = required(
        "Prometheus /metrics, /status and /events", example="127.0.0.1:9100"
    )


@dataclass(frozen=True, slots=True)
@settings
class HealthConfig:
    interval_s: float = setting(
        "L1 probe period (engine /health)", gt=0, check=_period, to=HealthSettings
    )
    timeout_s: float = setting("L1 probe timeout", gt=0, check=_period, to=HealthSettings)
    rise: int = setting(
        "consecutive successes before a replica is trusted again", ge=1, to=HealthSettings
    )
    fall: int = setting(
        "consecutive failures before a replica is taken out", ge=1, to=HealthSettings
    )
    l2_interval_s: float = setting(
        "L2 probe period (a tiny real completion)", gt=0, check=_period, to=HealthSettings
    )
    l2_timeout_s: float = setting("L2 probe timeout", gt=0, check=_period, to=HealthSettings)
    l2_prompt: str = setting("L2 probe prompt", to=HealthSettings)
    l2_max_tokens: int = setting("L2 probe max_tokens", ge=1, to=HealthSettings)
    passive_window_s: float = setting(
        "window of live-traffic outcomes used as passive health",
        default=30.0,
        gt=0,
        check=_period,
    )


@dataclass(frozen=True, slots=True)
@settings
class ThresholdsConfig:
    latency_ms: float = setting("end-to-end latency considered slow", gt=0, to=L3Thresholds)
    ttft_ms: float = setting("time to first token considered slow", gt=0, to=L3Thresholds)
    kv_usage: float = setting(
        "KV-cache usage (0..1) considered saturated", gt=0, le=1, to=L3Thresholds
    )
    queue_depth: float = setting("engine queue length considered backed up", gt=0, to=L3Thresholds)
    gpu_mem_prepare: float = setting(
        "GPU memory fraction: early warning, capacity event, weight ramps down (must be < reduce)",
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
    kv_high: float = setting(
        "weight falls above this KV-cache usage (to 0.3 at 100%)",
        gt=0,
        le=1,
        to=WeightThresholds,
    )
    queue_high: float = setting(
        "waiting requests at which a replica's weight is halved", gt=0, to=WeightThresholds
    )


def _check_thresholds(t: Table, cfg: ThresholdsConfig) -> ThresholdsConfig:
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
        "time to the first response byte of one try", gt=0, check=_period, to=RetryPolicy
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


@dataclass(frozen=True, slots=True)
@settings
class ClusterConfig:
    raft_listen: HostPort = required(
        "this node's Raft address, as the other nodes' peers name it", example="10.0.0.11:7001"
    )
    peers: tuple[HostPort, ...] = setting(
        "the other nodes' Raft addresses; empty = a one-node cluster",
        default=(),
        example=("10.0.0.12:7001", "10.0.0.13:7001"),
    )
    secret_file: Path | None = setting(
        "Raft password, at least 16 characters; required unless --insecure-dev",
        default=None,
        example="/etc/hanode/raft.secret",
    )
    election_min_s: float = setting(
        "shortest Raft election timeout", default=0.4, gt=0, check=_period
    )
    election_max_s: float = setting(
        "longest Raft election timeout", default=1.4, gt=0, check=_period
    )
    planner_interval_s: float = setting(
        "how often the leader plans", default=1.0, gt=0, check=_period
    )
    heartbeat_s: float = setting(
        "agents re-send unchanged observations this often", default=10.0, gt=0, check=_period
    )
    demote_hold_s: float = setting(
        "calm period before the planner demotes what it promoted", default=30.0, ge=0
    )
    node_lease_s: float = setting(
        "a node the leader has not heard from this long is lost",
        default=6.0,
        gt=0,
        check=_period,
    )
    checkpoint_s: float = setting(
        "how often the nodes compare digests of their replicated state (a node whose state "
        "diverged from the majority's takes the cluster's again)",
        default=30.0,
        gt=0,
    )


def _check_cluster(t: Table, cfg: ClusterConfig) -> ClusterConfig:
    if cfg.election_min_s >= cfg.election_max_s and not t.bad & {
        "election_min_s",
        "election_max_s",
    }:
        t.error("election_min_s", "must be below election_max_s", mark_bad=False)
    if str(cfg.raft_listen) in {str(p) for p in cfg.peers}:
        t.error("peers", "must not contain this node's own raft_listen address", mark_bad=False)
    return cfg


@dataclass(frozen=True, slots=True)
@settings
class ApiConfig:
    listen: HostPort = required("gRPC control API (hanodectl)", example="10.0.0.11:9200")
    api_keys: tuple[str, ...] = setting(
        "accepted bearer tokens; empty (and no key file) = no authentication", default=()
    )
    api_key_file: Path | None = setting(
        "one key per line, '#' comments; merged with api_keys",
        default=None,
        example="/etc/hanode/ctl_keys",
    )


@dataclass(frozen=True, slots=True)
@settings
class ModelConfig:
    name: str = required("a model name clients ask for", example="meta-llama/Llama-3.1-8B-Instruct")
    min_active: int = setting("active replicas the planner keeps serving", default=1, ge=1)
    redundancy: str = setting(
        "how spare replicas are kept", default="n_plus_1", choices=REDUNDANCY_MODES
    )
    request_timeout_s: float | None = setting(
        "this model's default deadline ([router].request_timeout_s when absent)",
        default=None,
        gt=0,
        example=600.0,
    )


def _check_models(t: Table, m: ModelConfig, earlier: Sequence[tuple[int, ModelConfig]]) -> None:
    if any(e.name == m.name for _, e in earlier):
        t.error("name", f"model {m.name!r} is configured twice")


@dataclass(frozen=True, slots=True)
@settings
class ReplicaSettings:
    """One [[replicas]] entry; :func:`hanode.settings.build` turns it into a ReplicaSpec."""

    name: str = required(
        "unique; letters, digits, _ . -", example="llama-8b-0", pattern=NAME_RE, to=ReplicaSpec
    )
    model: str = required(
        "the model name clients ask for", example="meta-llama/Llama-3.1-8B-Instruct", to=ReplicaSpec
    )
    url: str = required(
        "http://HOST:PORT, no path (no /v1); https not supported yet",
        example="http://127.0.0.1:8001",
        check=normalize_url,
        to=ReplicaSpec,
    )
    engine: str = setting("the serving engine", choices=ENGINES, to=ReplicaSpec)
    role: Role = setting(
        "active serves; standby is a warm spare: no traffic until promoted", to=ReplicaSpec
    )
    gpu: int | None = setting(
        "GPU index, for GPU-memory readings via NVML", ge=0, to=ReplicaSpec, example=0
    )


def _check_replicas(
    t: Table, r: ReplicaSettings, earlier: Sequence[tuple[int, ReplicaSettings]]
) -> None:
    if not r.name or "name" in t.bad:
        return
    first = next((i for i, e in earlier if e.name == r.name), None)
    if first is not None:
        t.error("name", f"{r.name!r} is already used by [[replicas]][{first}]")


# A bearer key is the whole secret: a short one is guessed (a one-character key was accepted).
MIN_API_KEY_LENGTH = 16


def _too_short(key: str) -> str | None:
    """Why ``key`` is too short to be a secret (the key itself is never in the message)."""
    if len(key) >= MIN_API_KEY_LENGTH:
        return None
    return f"keys must be at least {MIN_API_KEY_LENGTH} characters long, got {len(key)}"


def _api_keys(t: Table, keys: tuple[str, ...], key_file: Path | None) -> tuple[str, ...]:
    """Inline keys checked, plus those of ``api_key_file``, without duplicates."""
    for i, k in enumerate(keys):
        if not k or k != k.strip() or any(c.isspace() for c in k):
            t.error("api_keys", f"item {i}: keys must be non-empty and contain no whitespace")
        elif (short := _too_short(k)) is not None:
            t.error("api_keys", f"item {i}: {short}")
    merged = list(keys)
    if key_file is not None and "api_key_file" not in t.bad:
        merged += _read_key_file(t, key_file)
    return tuple(dict.fromkeys(merged))


def _read_key_file(t: Table, path: Path) -> list[str]:
    """Keys live in a separate file so the (world-readable) config need not hold secrets."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        t.error("api_key_file", f"cannot read {str(path)!r}: {reason}")
        return []
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        short = _too_short(key)
        if short is not None:
            t.error("api_key_file", f"{str(path)!r} line {number}: {short}")
        keys.append(key)
    if not keys:
        # An empty key file would silently turn authentication off: refuse it.
        t.error("api_key_file", f"{str(path)!r} contains no keys")
    return keys


def _with_keys(t: Table, cfg: Any) -> Any:
    """[router] and [api]: the keys in effect are the inline ones plus the key file's."""
    return dataclasses.replace(cfg, api_keys=_api_keys(t, cfg.api_keys, cfg.api_key_file))


SECTIONS: tuple[Section, ...] = (
    Section("node", NodeConfig, "this host", presence="required"),
    Section(
        "router",
        RouterConfig,
        "the inference front door",
        presence="required",
        check=_with_keys,
    ),
    Section("metrics", MetricsConfig, "the ops endpoint", presence="required"),
    Section("health", HealthConfig, "L1 (process) and L2 (a real completion) probes"),
    Section(
        "thresholds",
        ThresholdsConfig,
        "L3: out of range lowers a replica's weight, never removes it (except GPU memory)",
        check=_check_thresholds,
    ),
    Section("slo", SloConfig, '"quality success" of a request, for metrics'),
    Section("retry", RetryConfig, "failover before the first byte reaches the client"),
    Section("breaker", BreakerSettings, "per replica, behaving per failure class"),
    Section(
        "cluster",
        ClusterConfig,
        "consensus with the other nodes (Raft); absent = a standalone node",
        presence="optional",
        check=_check_cluster,
    ),
    Section(
        "api",
        ApiConfig,
        "gRPC control API for hanodectl (cluster nodes only)",
        presence="optional",
        check=_with_keys,
    ),
    Section(
        "models",
        ModelConfig,
        "optional; per-model policy for the leader's planner",
        presence="optional",
        many=True,
        entry_check=_check_models,
    ),
    Section(
        "replicas",
        ReplicaSettings,
        "one block per inference server on this host (at least one)",
        presence="required",
        many=True,
        entry_check=_check_replicas,
        examples=(
            {},
            {
                "name": "llama-8b-1",
                "url": "http://127.0.0.1:8002",
                "engine": "sglang",
                "role": "standby",
                "gpu": 1,
            },
        ),
    ),
)
