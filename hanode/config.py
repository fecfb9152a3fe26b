"""TOML configuration: load one file, validate every key, return frozen dataclasses.

The keys, their types, defaults, bounds and docs are declared once in
:mod:`hanode.settings.sections`; this module reads a document section by section from that
declaration, adds the checks that span sections, and keeps the names the rest of hanode imports.
Every mistake is collected before raising, each naming the file and the exact key.

Adding a section: declare its dataclass and one ``Section(...)`` in ``hanode/settings/
sections.py``, add a field to :class:`Config`, and regenerate ``examples/hanode.toml`` with
``python -m hanode.settings.example --write``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hanode.addresses import HostPort, is_loopback_host, is_wildcard_host, url_host
from hanode.pool.lifecycle import ActuatorSpec
from hanode.pool.replica import ReplicaSpec
from hanode.settings.reader import ConfigError, Table, suggest
from hanode.settings.schema import build
from hanode.settings.sections import (
    REDUNDANCY_MODES,
    SECTIONS,
    ApiConfig,
    BreakerSettings,
    ClassConfig,
    ClusterConfig,
    HealthConfig,
    KeyConfig,
    MetricsConfig,
    ModelConfig,
    NodeConfig,
    RecoveryConfig,
    RetryConfig,
    RouterConfig,
    SloConfig,
    ThresholdsConfig,
)
from hanode.settings.sections_classes import class_reference_errors

__all__ = [
    "REDUNDANCY_MODES",
    "ApiConfig",
    "BreakerSettings",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "HealthConfig",
    "HostPort",
    "MetricsConfig",
    "ModelConfig",
    "NodeConfig",
    "RetryConfig",
    "RouterConfig",
    "SloConfig",
    "ThresholdsConfig",
    "is_loopback_host",
    "is_wildcard_host",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True, slots=True)
class Config:
    node: NodeConfig
    router: RouterConfig
    metrics: MetricsConfig
    health: HealthConfig
    thresholds: ThresholdsConfig
    slo: SloConfig
    replicas: tuple[ReplicaSpec, ...]
    source: str  # the path the config was read from (or a label for parse_config)
    retry: RetryConfig = field(default_factory=RetryConfig)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    cluster: ClusterConfig | None = None  # None: a standalone node without consensus
    api: ApiConfig | None = None
    models: tuple[ModelConfig, ...] = ()
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    # Per replica, in the order of `replicas`: how this node acts on it. Local only.
    actuators: tuple[ActuatorSpec, ...] = ()
    classes: tuple[ClassConfig, ...] = ()  # request classes beyond/over the built-in ones
    api_keys: tuple[KeyConfig, ...] = ()  # keys naming their class


def parse_config(data: Mapping[str, Any], source: str) -> Config:
    """Validate already-decoded TOML; ``source`` labels messages and anchors relative paths."""
    errors: list[str] = []
    doc = Table(data, "", source, errors)
    values = {section.name: section.read(doc) for section in SECTIONS}
    node: NodeConfig = values["node"]
    values["actuators"] = tuple(build(ActuatorSpec, r, name=r.name) for r in values["replicas"])
    values["replicas"] = tuple(build(ReplicaSpec, r, node=node.name) for r in values["replicas"])
    cfg = Config(source=source, **values)
    if cfg.api is not None and cfg.cluster is None:
        # The control API serves the cluster's state: without [cluster] it never starts.
        errors.append(
            f"{source}: [api]: the control API runs on cluster nodes only; add [cluster] "
            "or remove [api]"
        )
    errors.extend(
        class_reference_errors(source, cfg.classes, cfg.api_keys, cfg.router.default_class)
    )
    if cfg.cluster is not None and cfg.node.advertise_host is None and not errors:
        errors.extend(_unadvertised(cfg))
    for key, value in data.items():
        if key in doc.known:
            continue
        hint = suggest(key, doc.known)
        if isinstance(value, Mapping):
            errors.append(f"{source}: [{key}]: unknown section{hint}")
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            errors.append(f"{source}: [[{key}]]: unknown section{hint}")
        else:
            errors.append(f"{source}: {key}: unknown top-level key (put it in a section){hint}")
    if errors:
        raise ConfigError(errors)
    return cfg


def _unadvertised(cfg: Config) -> list[str]:
    """Under [cluster], addresses other hosts would dial but cannot without advertise_host."""
    out: list[str] = []
    hint = "set [node].advertise_host to this host's address on the cluster network"
    for i, spec in enumerate(cfg.replicas):
        if is_loopback_host(url_host(spec.url)):
            out.append(
                f"{cfg.source}: [[replicas]][{i}].url: {spec.url!r} is on loopback, which other "
                f"nodes cannot reach; {hint}"
            )
    listens = [("[router].listen", cfg.router.listen), ("[metrics].listen", cfg.metrics.listen)]
    if cfg.cluster is not None:
        listens.append(("[cluster].raft_listen", cfg.cluster.raft_listen))
    if cfg.api is not None:
        listens.append(("[api].listen", cfg.api.listen))
    for key, hp in listens:
        if is_wildcard_host(hp.host):
            out.append(
                f"{cfg.source}: {key}: {str(hp)!r} listens on every address and names none "
                f"that other nodes could dial; {hint}"
            )
    return out


_TOML_POS_RE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def load_config(path: str | Path) -> Config:
    """Read and validate ``path``; every problem is reported as :class:`ConfigError`."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{source}: cannot read config: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: not UTF-8 (byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = _TOML_POS_RE.search(msg)
        where = f"line {m.group(1)}, column {m.group(2)}: " if m else ""
        msg = msg[: m.start()] if m else msg
        raise ConfigError(f"{source}: {where}invalid TOML: {msg}") from e
    return parse_config(data, source)
