"""Every section of hanode.toml, declared once (see :mod:`hanode.settings.schema`).

A key handed to a policy or runtime object names it with ``to=``; its default is that object's
own. Keys only the daemon wiring reads (addresses, paths, cluster timings) carry ``default=``.
Rules that involve more than one key are the ``check_*`` functions next to their section.
The sections are declared by what they configure (:mod:`~hanode.settings.sections_node`,
:mod:`~hanode.settings.sections_health`, :mod:`~hanode.settings.sections_cluster`); this
module assembles them, in the order of the file, into :data:`SECTIONS`.
"""

from __future__ import annotations

from hanode.settings.api_keys import MIN_API_KEY_LENGTH, api_keys, router_keys
from hanode.settings.schema import Section
from hanode.settings.sections_classes import ClassConfig, KeyConfig, check_classes, check_keys
from hanode.settings.sections_cluster import (
    REDUNDANCY_MODES,
    ClusterConfig,
    ModelConfig,
    ReplicaSettings,
    check_cluster,
    check_models,
    check_replicas,
)
from hanode.settings.sections_health import (
    BreakerSettings,
    HealthConfig,
    RetryConfig,
    SloConfig,
    ThresholdsConfig,
    check_thresholds,
)
from hanode.settings.sections_node import ApiConfig, MetricsConfig, NodeConfig, RouterConfig
from hanode.settings.sections_recovery import RecoveryConfig, check_recovery
from hanode.settings.value_checks import MIN_PERIOD_S, NAME_RE

__all__ = [
    "MIN_API_KEY_LENGTH",
    "MIN_PERIOD_S",
    "NAME_RE",
    "REDUNDANCY_MODES",
    "SECTIONS",
    "ApiConfig",
    "BreakerSettings",
    "ClassConfig",
    "ClusterConfig",
    "HealthConfig",
    "KeyConfig",
    "MetricsConfig",
    "ModelConfig",
    "NodeConfig",
    "RecoveryConfig",
    "ReplicaSettings",
    "RetryConfig",
    "RouterConfig",
    "SloConfig",
    "ThresholdsConfig",
]


SECTIONS: tuple[Section, ...] = (
    Section("node", NodeConfig, "this host", presence="required"),
    Section(
        "router",
        RouterConfig,
        "the inference front door",
        presence="required",
        check=router_keys,
    ),
    Section("metrics", MetricsConfig, "the ops endpoint (loopback by default)"),
    Section("health", HealthConfig, "L1 (process) and L2 (a real completion) probes"),
    Section(
        "thresholds",
        ThresholdsConfig,
        "L3: out of range lowers a replica's weight, never removes it (except GPU memory)",
        check=check_thresholds,
    ),
    Section("slo", SloConfig, '"quality success" of a request, for metrics'),
    Section("retry", RetryConfig, "failover before the first byte reaches the client"),
    Section("breaker", BreakerSettings, "per replica, behaving per failure class"),
    Section(
        "recovery",
        RecoveryConfig,
        "restarts of the replicas this node runs (actuator in [[replicas]]; docs/recovery.md)",
        check=check_recovery,
    ),
    Section(
        "cluster",
        ClusterConfig,
        "consensus with the other nodes (Raft); absent = a standalone node",
        presence="optional",
        check=check_cluster,
    ),
    Section(
        "api",
        ApiConfig,
        "gRPC control API for hanodectl (cluster nodes only)",
        presence="optional",
        check=api_keys,
    ),
    Section(
        "models",
        ModelConfig,
        "optional; per-model policy for the leader's planner",
        presence="optional",
        many=True,
        entry_check=check_models,
    ),
    Section(
        "classes",
        ClassConfig,
        "optional; request classes (built in: interactive, internal, batch; docs/degradation.md)",
        presence="optional",
        many=True,
        entry_check=check_classes,
    ),
    Section(
        "api_keys",
        KeyConfig,
        "optional; API keys that name their request class (a key or its SHA-256)",
        presence="optional",
        many=True,
        entry_check=check_keys,
        examples=({"key": None},),
    ),
    Section(
        "replicas",
        ReplicaSettings,
        "one block per inference server on this host (at least one)",
        presence="required",
        many=True,
        entry_check=check_replicas,
        examples=(
            {"unit": None},  # the first entry runs a command; unit is for "systemd"
            {
                "name": "llama-8b-1",
                "url": "http://127.0.0.1:8002",
                "engine": "sglang",
                "role": "standby",
                "gpu": 1,
                "actuator": "systemd",
                "command": (),
                "unit": "sglang@1.service",
                "standby": "sleep",
            },
        ),
    ),
)
