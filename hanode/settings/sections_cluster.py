"""The sections that configure the cluster and what it serves: [cluster], [[models]],
[[replicas]]."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hanode.addresses import HostPort, normalize_url
from hanode.pool.lifecycle import ACTUATORS, RELOADS, ActuatorSpec, StandbyMode
from hanode.pool.replica import ENGINES, ReplicaSpec, Role
from hanode.settings.reader import Table
from hanode.settings.schema import required, setting, settings
from hanode.settings.sections_recovery import check_actuation
from hanode.settings.value_checks import NAME_RE, l2_path, period

ENGINE_RELOADS = ("vllm", "sglang")  # engines with a weight reload call (actuators.engine_reload)
REDUNDANCY_MODES = ("n_plus_1", "primary_standby", "active_active")


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
        "shortest Raft election timeout", default=0.4, gt=0, check=period
    )
    election_max_s: float = setting(
        "longest Raft election timeout", default=1.4, gt=0, check=period
    )
    planner_interval_s: float = setting(
        "how often the leader plans", default=1.0, gt=0, check=period
    )
    heartbeat_s: float = setting(
        "agents re-send unchanged observations this often", default=10.0, gt=0, check=period
    )
    demote_hold_s: float = setting(
        "calm period before the planner demotes what it promoted", default=30.0, ge=0
    )
    node_lease_s: float = setting(
        "a node the leader has not heard from this long is lost",
        default=6.0,
        gt=0,
        check=period,
    )
    checkpoint_s: float = setting(
        "how often the nodes compare digests of their replicated state (a node whose state "
        "diverged from the majority's takes the cluster's again)",
        default=30.0,
        gt=0,
    )
    # Rolling reloads (hanodectl reload; docs/rollouts.md), carried out by the leader.
    rollout_reload_timeout_s: float = setting(
        "a reloaded replica that has not passed L2 by then fails the rollout (models take "
        "minutes to load)",
        default=600.0,
        gt=0,
    )
    rollout_warmup_prompts: int = setting(
        "warm-up prompts the leader sends a reloaded replica after L2, before it ramps up",
        default=2,
        ge=0,
    )
    rollout_drain_timeout_s: float = setting(
        "how long a rollout waits for a draining replica's in-flight requests (every "
        "router's) by default (hanodectl reload --drain-timeout)",
        default=60.0,
        ge=0,
    )


def check_cluster(t: Table, cfg: ClusterConfig) -> ClusterConfig:
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
    fallback: tuple[str, ...] = setting(
        "models that answer this model's requests of classes with fallback = true when it is "
        "out of capacity or has no serving replica, in order (docs/degradation.md)",
        default=(),
        example=("llama-8b",),
    )
    max_concurrency: int | None = setting(
        "requests one of its replicas serves at once ([router].max_concurrency when absent)",
        default=None,
        ge=1,
        example=64,
    )
    degrade_max_tokens: int | None = setting(
        "under pressure, new requests' max_tokens is capped at this (tighter as pressure grows)",
        default=None,
        ge=1,
        example=512,
    )
    degrade_max_tokens_floor: int = setting(
        "the max_tokens cap never goes below this (reasoning models need room to answer)",
        default=0,
        ge=0,
    )
    degrade_max_prompt_tokens: int | None = setting(
        "under pressure, prompts estimated above this many tokens get 400 context_length_exceeded",
        default=None,
        ge=1,
        example=4096,
    )
    degrade_temperature: float | None = setting(
        "under pressure, temperatures above this are lowered to it",
        default=None,
        ge=0,
        example=0.7,
    )
    degrade_max_tokens_engage: float = setting(
        "pressure at which the max_tokens cap engages", default=1.2, gt=0
    )
    degrade_max_tokens_release: float = setting(
        "pressure at which it releases again (below the engage level)", default=0.9, ge=0
    )
    degrade_prompt_engage: float = setting(
        "pressure at which the prompt limit engages", default=2.0, gt=0
    )
    degrade_prompt_release: float = setting("... and releases", default=1.2, ge=0)
    degrade_temperature_engage: float = setting(
        "pressure at which the temperature cap engages", default=1.5, gt=0
    )
    degrade_temperature_release: float = setting("... and releases", default=1.0, ge=0)
    gpu_price_per_hour: float | None = setting(
        "what one of its replicas' GPUs costs an hour, for `hanodectl plan` (shown only)",
        default=None,
        ge=0,
        example=2.5,
    )


def check_models(t: Table, m: ModelConfig, earlier: Sequence[tuple[int, ModelConfig]]) -> None:
    if any(e.name == m.name for _, e in earlier):
        t.error("name", f"model {m.name!r} is configured twice")
    if m.name in m.fallback:
        t.error("fallback", "a model cannot be its own fallback")
    for policy in ("max_tokens", "prompt", "temperature"):
        engage = getattr(m, f"degrade_{policy}_engage")
        if getattr(m, f"degrade_{policy}_release") >= engage:
            t.error(f"degrade_{policy}_release", f"must be below degrade_{policy}_engage")


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
    l2_path: str | None = setting(
        "where the L2 test prompt goes (default: the engine's); a path ending in "
        "chat/completions gets a chat body, any other a completions body",
        check=l2_path,
        to=ReplicaSpec,
        example="/v1/chat/completions",
    )
    # How this node acts on the replica (docs/recovery.md); local only, never replicated.
    actuator: str = setting(
        'how hanode acts on it: "none" only routes; "command" runs `command` itself; '
        '"systemd" starts and stops `unit`',
        choices=ACTUATORS,
        to=ActuatorSpec,
        example="command",
    )
    command: tuple[str, ...] = setting(
        'actuator = "command": program and arguments (no shell)',
        to=ActuatorSpec,
        example=("vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--port", "8001"),
    )
    unit: str | None = setting(
        'actuator = "systemd": the unit', to=ActuatorSpec, example="vllm@0.service"
    )
    standby: StandbyMode = setting(
        "how it waits while a standby: loaded and hot, in the engine's sleep mode, or stopped",
        to=ActuatorSpec,
    )
    reload: str = setting(
        'how a rolling reload (hanodectl reload) reloads it: "restart" its process or unit '
        '(after you changed the command or unit), or "engine": the engine\'s own call (vLLM '
        "/collective_rpc reload_weights, SGLang /update_weights_from_disk)",
        choices=RELOADS,
        to=ActuatorSpec,
    )


def check_replicas(
    t: Table, r: ReplicaSettings, earlier: Sequence[tuple[int, ReplicaSettings]]
) -> None:
    if not r.name or "name" in t.bad:
        return
    first = next((i for i, e in earlier if e.name == r.name), None)
    if first is not None:
        t.error("name", f"{r.name!r} is already used by [[replicas]][{first}]")
    check_actuation(t, r.actuator, r.command, r.unit, r.standby, r.engine)
    if r.reload == "engine" and "reload" not in t.bad:
        if r.engine not in ENGINE_RELOADS:
            t.error(
                "reload",
                f'reload = "engine" needs an engine with a reload call '
                f"({', '.join(ENGINE_RELOADS)}), not {r.engine!r}",
            )
        elif r.actuator == "none":
            t.error("reload", 'reload = "engine" needs an actuator ("command" or "systemd")')
