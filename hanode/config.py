"""TOML configuration: load one file, validate every key, return frozen dataclasses.

Validation collects *all* mistakes before raising, so an operator fixes a broken file in one
round instead of one error per restart. Every message names the file and the exact key.

Adding a section is one small function: write ``_parse_<name>(t: _Table) -> <Name>Config`` that
reads its keys through ``t`` (which records what was read, so leftovers are reported as unknown),
add a field to :class:`Config` and one ``doc.table(...)`` line in :func:`parse_config`.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from hanode.pool.replica import ENGINES, ReplicaSpec, Role

__all__ = [
    "Config",
    "ConfigError",
    "HealthConfig",
    "HostPort",
    "MetricsConfig",
    "NodeConfig",
    "RouterConfig",
    "SloConfig",
    "ThresholdsConfig",
    "load_config",
    "parse_config",
]

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_HOST_RE = re.compile(r"[A-Za-z0-9_.-]+")
_T = TypeVar("_T")
# Planned sections: named in the error so nobody hunts for a typo in them.
_FUTURE_SECTIONS: frozenset[str] = frozenset()


class ConfigError(Exception):
    """The config is unusable; ``str()`` is one line per mistake, each naming file and key."""

    def __init__(self, errors: str | Sequence[str]) -> None:
        self.errors: tuple[str, ...] = (errors,) if isinstance(errors, str) else tuple(errors)
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPort:
    """A listen address; ``host`` is stored without IPv6 brackets, as sockets want it."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    data_dir: Path  # relative paths are resolved against the config file's directory
    # The address other nodes use to reach this node's replicas and APIs; loopback replica
    # URLs and wildcard listen addresses are replicated with it in their place.
    advertise_host: str | None = None


@dataclass(frozen=True, slots=True)
class RouterConfig:
    listen: HostPort
    api_keys: tuple[str, ...] = ()  # inline keys plus those read from api_key_file; () = no auth
    api_key_file: Path | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_connections: int = 4096
    request_timeout_s: float = 300.0  # overall deadline of one request, streaming included
    connect_timeout_s: float = 2.0  # TCP connect to a replica
    header_timeout_s: float = 10.0  # time allowed to receive a whole request from a client
    idle_timeout_s: float = 75.0  # keep-alive idle before the server closes
    max_tokens_limit: int = 131072
    max_n: int = 16


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: HostPort


@dataclass(frozen=True, slots=True)
class HealthConfig:
    interval_s: float = 1.0  # L1 probe period
    timeout_s: float = 2.0
    rise: int = 2  # consecutive successes before a replica is considered up
    fall: int = 2  # consecutive failures before it is considered down
    l2_interval_s: float = 60.0  # L2 (tiny real completion) period
    l2_timeout_s: float = 15.0
    l2_prompt: str = "Say OK."
    l2_max_tokens: int = 4
    passive_window_s: float = 30.0  # window of live-traffic outcomes used as passive health


@dataclass(frozen=True, slots=True)
class ThresholdsConfig:
    latency_ms: float = 2000.0
    ttft_ms: float = 1000.0
    kv_usage: float = 0.90
    queue_depth: float = 32.0
    gpu_mem_prepare: float = 0.80
    gpu_mem_reduce: float = 0.90
    gpu_mem_remove: float = 0.95
    gpu_mem_recover: float = 0.90
    kv_high: float = 0.85  # weight starts to fall above this KV-cache usage
    queue_high: float = 16.0  # waiting requests at which a replica's weight is halved


@dataclass(frozen=True, slots=True)
class SloConfig:
    latency_ms: float = 10000.0
    ttft_ms: float = 2000.0


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int = 3  # tries per request, the first included
    per_try_timeout_s: float = 60.0  # time to the first response byte of one try
    backoff_base_s: float = 0.02  # full-jitter exponential backoff between tries
    backoff_cap_s: float = 1.0
    budget_ratio: float = 0.2  # retries allowed as a share of recent requests
    budget_min_per_s: float = 3.0  # plus this floor, so a quiet node can still retry


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    consecutive_failures: int = 5  # 5xx / connection resets in a row before opening
    timeout_trip_count: int = 3  # per-try timeouts in a row before opening
    oom_trip_count: int = 3  # GPU OOMs within oom_window_s before opening
    oom_window_s: float = 30.0
    oom_weight_cut: float = 0.25  # weight factor right after an OOM
    oom_recovery_s: float = 30.0  # time for that factor to climb back to 1
    busy_backoff_s: float = 1.0  # pause after a 503 busy
    default_retry_after_s: float = 2.0  # pause after a 429 without Retry-After
    max_pause_s: float = 60.0
    open_base_s: float = 5.0  # first open period; doubles on each failed probe
    open_max_s: float = 60.0
    half_open_probes: int = 1
    # Breakers opened by other routers never take more than this share of a model's serving
    # replicas out of this router's routing; its own breakers still act on what it sees.
    max_ejection_percent: float = 50.0


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    raft_listen: HostPort
    peers: tuple[HostPort, ...] = ()  # the other nodes' Raft addresses; () = one-node cluster
    secret_file: Path | None = None  # Raft password; required unless --insecure-dev
    election_min_s: float = 0.4
    election_max_s: float = 1.4
    planner_interval_s: float = 1.0
    heartbeat_s: float = 10.0  # agents re-send unchanged observations this often
    demote_hold_s: float = 30.0  # calm period before the planner demotes what it promoted
    node_lease_s: float = 6.0  # a node the leader has not heard from this long is lost


@dataclass(frozen=True, slots=True)
class ApiConfig:
    listen: HostPort  # gRPC control API
    api_keys: tuple[str, ...] = ()
    api_key_file: Path | None = None


REDUNDANCY_MODES = ("n_plus_1", "primary_standby", "active_active")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    min_active: int = 1
    redundancy: str = "n_plus_1"
    request_timeout_s: float | None = None  # this model's default deadline ([router]'s if unset)


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
    retry: RetryConfig = RetryConfig()
    breaker: BreakerSettings = BreakerSettings()
    cluster: ClusterConfig | None = None  # None: a standalone node without consensus
    api: ApiConfig | None = None
    models: tuple[ModelConfig, ...] = ()


# --------------------------------------------------------------------------------------------
# Reading helpers: every getter records errors instead of raising and returns a placeholder
# --------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """Render a value the way the operator wrote it in TOML, so messages are recognisable."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return f"a {type(value).__name__}"


def _fmt_num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Table:
    """One TOML table being validated: remembers which keys were read and which were bad."""

    def __init__(self, data: Mapping[str, Any], where: str, source: str, errors: list[str]) -> None:
        self.data = data
        self.where = where  # e.g. "[router]" or "[[replicas]][1]"
        self.source = source
        self.errors = errors
        self.known: list[str] = []
        self.bad: set[str] = set()

    # -- bookkeeping ------------------------------------------------------------------------

    def loc(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, message: str, *, mark_bad: bool = True) -> None:
        """Record a mistake; ``mark_bad`` stops later cross-checks from piling onto the key."""
        if mark_bad:
            self.bad.add(key)
        self.errors.append(f"{self.source}: {self.loc(key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def _raw(self, key: str, default: object) -> Any:
        self.known.append(key)
        if key in self.data:
            return self.data[key]
        if default is None:
            self.error(key, "missing required key")
        return default

    def finish(self) -> None:
        """Report keys nobody asked for: typos must not silently fall back to defaults."""
        for key in self.data:
            if key not in self.known:
                self.errors.append(
                    f"{self.source}: {self.loc(key)}: unknown key{_suggest(key, self.known)}"
                )

    # -- typed getters (a default of None means "required") --------------------------------

    def get_str(
        self, key: str, default: str | None = None, *, pattern: re.Pattern[str] | None = None
    ) -> str:
        value = self._raw(key, default)
        if key not in self.data:
            return default or ""
        if not isinstance(value, str):
            self.error(key, f"expected a string, got {_kind(value)} ({_show(value)})")
            return default or ""
        if not value:
            self.error(key, "must not be empty")
        elif pattern is not None and not pattern.fullmatch(value):
            self.error(key, f"{_show(value)} may only contain letters, digits, '_', '.' and '-'")
        return value

    def get_opt_int(self, key: str, *, ge: int | None = None) -> int | None:
        """An integer that may be absent (absent means "not known", e.g. no GPU index)."""
        if key not in self.data:
            self.known.append(key)
            return None
        return self.get_int(key, ge=ge)

    def get_opt_float(self, key: str, *, gt: float | None = None) -> float | None:
        """A number that may be absent (absent means "use the general default")."""
        if key not in self.data:
            self.known.append(key)
            return None
        return self.get_float(key, 0.0, gt=gt)

    def get_int(self, key: str, default: int | None = None, *, ge: int | None = None) -> int:
        value = self._raw(key, default)
        if key not in self.data:
            return default or 0
        # bool is a subclass of int in Python, but `rise = true` is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"expected an integer, got {_kind(value)} ({_show(value)})")
            return default or 0
        if ge is not None and value < ge:
            self.error(key, f"must be >= {ge}, got {value}")
        return value

    def get_float(
        self,
        key: str,
        default: float | None = None,
        *,
        gt: float | None = None,
        ge: float | None = None,
        le: float | None = None,
    ) -> float:
        value = self._raw(key, default)
        if key not in self.data:
            return float(default or 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"expected a number, got {_kind(value)} ({_show(value)})")
            return float(default or 0.0)
        number = float(value)
        if not math.isfinite(number):
            self.error(key, f"must be a finite number, got {number}")
        elif gt is not None and number <= gt:
            self.error(key, f"must be > {_fmt_num(gt)}, got {_fmt_num(number)}")
        elif ge is not None and number < ge:
            self.error(key, f"must be >= {_fmt_num(ge)}, got {_fmt_num(number)}")
        elif le is not None and number > le:
            self.error(key, f"must be <= {_fmt_num(le)}, got {_fmt_num(number)}")
        return number

    def get_str_list(self, key: str) -> list[str]:
        self.known.append(key)
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.error(key, f"expected an array of strings, got {_kind(value)} ({_show(value)})")
            return []
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.error(key, f"item {i}: expected a string, got {_kind(item)} ({_show(item)})")
            else:
                out.append(item)
        return out

    def get_choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.get_str(key, default)
        if key in self.data and key not in self.bad and value not in choices:
            self.error(key, f"{_show(value)} is not one of {', '.join(choices)}")
            return default
        return value

    def get_listen(self, key: str) -> HostPort:
        value = self.get_str(key)
        if key in self.bad or not value:
            return HostPort("", 0)
        hp, problem = _parse_hostport(value)
        if problem:
            self.error(key, f"{_show(value)}: {problem}")
        return hp

    def get_path(self, key: str, *, required: bool) -> Path | None:
        """Relative paths are taken from the config file's directory, not the daemon's cwd."""
        if not required and key not in self.data:
            self.known.append(key)
            return None
        value = self.get_str(key)
        if key in self.bad or not value:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.source).parent / p

    def table(
        self,
        key: str,
        parse: Callable[[_Table], _T],
        *,
        required: bool = False,
    ) -> _T:
        """Parse sub-table ``key`` with ``parse``; a missing optional table parses as empty."""
        self.known.append(key)
        value = self.data.get(key)
        where = f"[{key}]"
        if value is None:
            if required:
                self.errors.append(f"{self.source}: {where}: missing required section")
            # Parse an empty table into a throwaway error list: defaults, no cascade of noise.
            return parse(_Table({}, where, self.source, []))
        if not isinstance(value, Mapping):
            self.errors.append(f"{self.source}: {where}: expected a table, got {_kind(value)}")
            return parse(_Table({}, where, self.source, []))
        sub = _Table(value, where, self.source, self.errors)
        result = parse(sub)
        sub.finish()
        return result

    def array_of_tables(self, key: str, *, required: bool = True) -> Iterator[tuple[int, _Table]]:
        """Yield one validated sub-table per ``[[key]]`` entry (unknown keys checked after)."""
        self.known.append(key)
        value = self.data.get(key)
        if value is None:
            if not required:
                return
            self.errors.append(f"{self.source}: [[{key}]]: at least one entry is required")
            return
        if not isinstance(value, list) or not value:
            self.errors.append(
                f"{self.source}: [[{key}]]: expected an array of tables ([[{key}]] blocks)"
            )
            return
        for i, item in enumerate(value):
            where = f"[[{key}]][{i}]"
            if not isinstance(item, Mapping):
                self.errors.append(f"{self.source}: {where}: expected a table, got {_kind(item)}")
                continue
            sub = _Table(item, where, self.source, self.errors)
            yield i, sub
            sub.finish()


def _parse_hostport(text: str) -> tuple[HostPort, str]:
    """Split "HOST:PORT" / "[v6]:PORT"; returns (value, problem), problem "" when fine."""
    bad = HostPort("", 0)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            return bad, "expected '[IPv6]:PORT', e.g. '[::1]:8080'"
        port_text = rest[1:]
        if not _is_ipv6(host):
            return bad, f"{host!r} is not an IPv6 address"
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            return bad, "expected 'HOST:PORT', e.g. '0.0.0.0:8080'"
        if ":" in host:
            return bad, "put IPv6 addresses in brackets, e.g. '[::1]:8080'"
        if not _HOST_RE.fullmatch(host):
            return bad, f"{host!r} is not a valid host"
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        return bad, f"port must be a number in 1..65535, got {port_text!r}"
    return HostPort(host, int(port_text)), ""


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _normalize_url(url: str) -> tuple[str, str]:
    """Validate a replica base URL; returns (normalised url, problem), problem "" when fine."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        return url, f"{url!r} is not a valid URL ({e})"
    if parts.scheme == "https":
        return url, f"{url!r}: https is not supported yet; use http:// to a local replica"
    if parts.scheme != "http":
        return url, f"{url!r}: expected 'http://HOST:PORT'"
    host = parts.hostname
    if not host:
        return url, f"{url!r}: missing host"
    if not (_HOST_RE.fullmatch(host) or ("[" in parts.netloc and _is_ipv6(host))):
        return url, f"{url!r}: {host!r} is not a valid host"
    if port is None:
        return url, f"{url!r}: missing port; expected 'http://HOST:PORT'"
    if not 1 <= port <= 65535:
        return url, f"{url!r}: port must be in 1..65535"
    if "@" in parts.netloc:
        return url, f"{url!r}: credentials in the URL are not supported"
    if parts.query or parts.fragment:
        return url, f"{url!r}: must not have a query or fragment"
    if parts.path not in ("", "/"):
        hint = " (drop the /v1: hanode adds API paths itself)" if "v1" in parts.path else ""
        return url, f"{url!r}: must not have a path{hint}"
    return f"http://{parts.netloc}", ""


# --------------------------------------------------------------------------------------------
# Sections: one small function each
# --------------------------------------------------------------------------------------------


def _parse_node(t: _Table) -> NodeConfig:
    name = t.get_str("name", pattern=_NAME_RE)
    data_dir = t.get_path("data_dir", required=True)
    advertise: str | None = None
    if t.has("advertise_host"):
        advertise = t.get_str("advertise_host", "")
        if "advertise_host" not in t.bad and advertise:
            host = advertise[1:-1] if advertise.startswith("[") else advertise
            if not (_HOST_RE.fullmatch(host) or _is_ipv6(host)):
                t.error("advertise_host", f"{_show(advertise)} is not a valid host")
            elif is_wildcard_host(host):
                t.error(
                    "advertise_host",
                    f"{_show(advertise)} names no address; give this host's address on the "
                    "cluster network (or 127.0.0.1 for a cluster that lives on one host)",
                )
            advertise = host
    else:
        t.known.append("advertise_host")
    return NodeConfig(name=name, data_dir=data_dir or Path(), advertise_host=advertise or None)


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: addresses that mean "this host" wherever they are read."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard_host(host: str) -> bool:
    """0.0.0.0 and :: listen on every address, so they name none that a peer could dial."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _read_key_file(t: _Table, path: Path) -> list[str]:
    """Keys live in a separate file so the (world-readable) config need not hold secrets."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        t.error("api_key_file", f"cannot read {str(path)!r}: {reason}")
        return []
    keys = [ln.strip() for ln in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        # An empty key file would silently turn authentication off: refuse it.
        t.error("api_key_file", f"{str(path)!r} contains no keys")
    return keys


def _parse_router(t: _Table) -> RouterConfig:
    d = RouterConfig(listen=HostPort("", 0))
    listen = t.get_listen("listen")
    keys, key_file = _api_keys(t)
    return RouterConfig(
        listen=listen,
        api_keys=tuple(dict.fromkeys(keys)),
        api_key_file=key_file,
        max_body_bytes=t.get_int("max_body_bytes", d.max_body_bytes, ge=1),
        max_header_bytes=t.get_int("max_header_bytes", d.max_header_bytes, ge=1),
        max_connections=t.get_int("max_connections", d.max_connections, ge=1),
        request_timeout_s=t.get_float("request_timeout_s", d.request_timeout_s, gt=0),
        connect_timeout_s=t.get_float("connect_timeout_s", d.connect_timeout_s, gt=0),
        header_timeout_s=t.get_float("header_timeout_s", d.header_timeout_s, gt=0),
        idle_timeout_s=t.get_float("idle_timeout_s", d.idle_timeout_s, gt=0),
        max_tokens_limit=t.get_int("max_tokens_limit", d.max_tokens_limit, ge=1),
        max_n=t.get_int("max_n", d.max_n, ge=1),
    )


def _parse_metrics(t: _Table) -> MetricsConfig:
    return MetricsConfig(listen=t.get_listen("listen"))


def _parse_health(t: _Table) -> HealthConfig:
    d = HealthConfig()
    return HealthConfig(
        interval_s=t.get_float("interval_s", d.interval_s, gt=0),
        timeout_s=t.get_float("timeout_s", d.timeout_s, gt=0),
        rise=t.get_int("rise", d.rise, ge=1),
        fall=t.get_int("fall", d.fall, ge=1),
        l2_interval_s=t.get_float("l2_interval_s", d.l2_interval_s, gt=0),
        l2_timeout_s=t.get_float("l2_timeout_s", d.l2_timeout_s, gt=0),
        l2_prompt=t.get_str("l2_prompt", d.l2_prompt),
        l2_max_tokens=t.get_int("l2_max_tokens", d.l2_max_tokens, ge=1),
        passive_window_s=t.get_float("passive_window_s", d.passive_window_s, gt=0),
    )


def _parse_thresholds(t: _Table) -> ThresholdsConfig:
    d = ThresholdsConfig()
    cfg = ThresholdsConfig(
        latency_ms=t.get_float("latency_ms", d.latency_ms, gt=0),
        ttft_ms=t.get_float("ttft_ms", d.ttft_ms, gt=0),
        kv_usage=t.get_float("kv_usage", d.kv_usage, gt=0, le=1),
        queue_depth=t.get_float("queue_depth", d.queue_depth, gt=0),
        gpu_mem_prepare=t.get_float("gpu_mem_prepare", d.gpu_mem_prepare, gt=0, le=1),
        gpu_mem_reduce=t.get_float("gpu_mem_reduce", d.gpu_mem_reduce, gt=0, le=1),
        gpu_mem_remove=t.get_float("gpu_mem_remove", d.gpu_mem_remove, gt=0, le=1),
        gpu_mem_recover=t.get_float("gpu_mem_recover", d.gpu_mem_recover, gt=0, le=1),
        kv_high=t.get_float("kv_high", d.kv_high, gt=0, le=1),
        queue_high=t.get_float("queue_high", d.queue_high, gt=0),
    )

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
                f"{low} ({_fmt_num(lo)}{lo_d}) must be below {high} ({_fmt_num(hi)}{hi_d})",
                mark_bad=False,
            )

    below("gpu_mem_prepare", "gpu_mem_reduce")
    below("gpu_mem_reduce", "gpu_mem_remove")
    # Hysteresis: a replica removed at `remove` comes back only once below `recover`.
    below("gpu_mem_recover", "gpu_mem_remove")
    return cfg


def _parse_slo(t: _Table) -> SloConfig:
    d = SloConfig()
    return SloConfig(
        latency_ms=t.get_float("latency_ms", d.latency_ms, gt=0),
        ttft_ms=t.get_float("ttft_ms", d.ttft_ms, gt=0),
    )


def _parse_retry(t: _Table) -> RetryConfig:
    d = RetryConfig()
    return RetryConfig(
        max_attempts=t.get_int("max_attempts", d.max_attempts, ge=1),
        per_try_timeout_s=t.get_float("per_try_timeout_s", d.per_try_timeout_s, gt=0),
        backoff_base_s=t.get_float("backoff_base_s", d.backoff_base_s, gt=0),
        backoff_cap_s=t.get_float("backoff_cap_s", d.backoff_cap_s, gt=0),
        budget_ratio=t.get_float("budget_ratio", d.budget_ratio, gt=0, le=1),
        budget_min_per_s=t.get_float("budget_min_per_s", d.budget_min_per_s, gt=0),
    )


def _parse_breaker(t: _Table) -> BreakerSettings:
    d = BreakerSettings()
    return BreakerSettings(
        consecutive_failures=t.get_int("consecutive_failures", d.consecutive_failures, ge=1),
        timeout_trip_count=t.get_int("timeout_trip_count", d.timeout_trip_count, ge=1),
        oom_trip_count=t.get_int("oom_trip_count", d.oom_trip_count, ge=1),
        oom_window_s=t.get_float("oom_window_s", d.oom_window_s, gt=0),
        oom_weight_cut=t.get_float("oom_weight_cut", d.oom_weight_cut, gt=0, le=1),
        oom_recovery_s=t.get_float("oom_recovery_s", d.oom_recovery_s, gt=0),
        busy_backoff_s=t.get_float("busy_backoff_s", d.busy_backoff_s, gt=0),
        default_retry_after_s=t.get_float("default_retry_after_s", d.default_retry_after_s, gt=0),
        max_pause_s=t.get_float("max_pause_s", d.max_pause_s, gt=0),
        open_base_s=t.get_float("open_base_s", d.open_base_s, gt=0),
        open_max_s=t.get_float("open_max_s", d.open_max_s, gt=0),
        half_open_probes=t.get_int("half_open_probes", d.half_open_probes, ge=1),
        max_ejection_percent=t.get_float(
            "max_ejection_percent", d.max_ejection_percent, ge=0, le=100
        ),
    )


def _api_keys(t: _Table) -> tuple[list[str], Path | None]:
    keys = t.get_str_list("api_keys")
    for i, k in enumerate(keys):
        if not k or k != k.strip() or any(c.isspace() for c in k):
            t.error("api_keys", f"item {i}: keys must be non-empty and contain no whitespace")
    key_file = t.get_path("api_key_file", required=False)
    if key_file is not None and "api_key_file" not in t.bad:
        keys += _read_key_file(t, key_file)
    return keys, key_file


def _parse_cluster(t: _Table) -> ClusterConfig:
    d = ClusterConfig(raft_listen=HostPort("", 0))
    peers: list[HostPort] = []
    for i, text in enumerate(t.get_str_list("peers")):
        hp, problem = _parse_hostport(text)
        if problem:
            t.error("peers", f"item {i}: {problem}")
        else:
            peers.append(hp)
    cfg = ClusterConfig(
        raft_listen=t.get_listen("raft_listen"),
        peers=tuple(peers),
        secret_file=t.get_path("secret_file", required=False),
        election_min_s=t.get_float("election_min_s", d.election_min_s, gt=0),
        election_max_s=t.get_float("election_max_s", d.election_max_s, gt=0),
        planner_interval_s=t.get_float("planner_interval_s", d.planner_interval_s, gt=0),
        heartbeat_s=t.get_float("heartbeat_s", d.heartbeat_s, gt=0),
        demote_hold_s=t.get_float("demote_hold_s", d.demote_hold_s, ge=0),
        node_lease_s=t.get_float("node_lease_s", d.node_lease_s, gt=0),
    )
    if cfg.election_min_s >= cfg.election_max_s and not t.bad & {
        "election_min_s",
        "election_max_s",
    }:
        t.error("election_min_s", "must be below election_max_s", mark_bad=False)
    if str(cfg.raft_listen) in {str(p) for p in cfg.peers}:
        t.error("peers", "must not contain this node's own raft_listen address", mark_bad=False)
    return cfg


def _parse_api(t: _Table) -> ApiConfig:
    keys, key_file = _api_keys(t)
    return ApiConfig(
        listen=t.get_listen("listen"),
        api_keys=tuple(dict.fromkeys(keys)),
        api_key_file=key_file,
    )


def _parse_models(doc: _Table) -> tuple[ModelConfig, ...]:
    models: list[ModelConfig] = []
    seen: set[str] = set()
    for _, t in doc.array_of_tables("models", required=False):
        m = ModelConfig(
            name=t.get_str("name"),
            min_active=t.get_int("min_active", 1, ge=1),
            redundancy=t.get_choice("redundancy", REDUNDANCY_MODES, "n_plus_1"),
            request_timeout_s=t.get_opt_float("request_timeout_s", gt=0),
        )
        if m.name in seen:
            t.error("name", f"model {m.name!r} is configured twice")
        seen.add(m.name)
        models.append(m)
    return tuple(models)


def _parse_replica(t: _Table, node: str) -> ReplicaSpec:
    name = t.get_str("name", pattern=_NAME_RE)
    model = t.get_str("model")
    url = t.get_str("url")
    if "url" not in t.bad and url:
        url, problem = _normalize_url(url)
        if problem:
            t.error("url", problem)
    engine = t.get_choice("engine", ENGINES, "vllm")
    role = t.get_choice("role", [r.value for r in Role], Role.ACTIVE.value)
    gpu = t.get_opt_int("gpu", ge=0)
    return ReplicaSpec(
        name=name, model=model, url=url, engine=engine, role=Role(role), gpu=gpu, node=node
    )


def _parse_replicas(doc: _Table, node: str) -> tuple[ReplicaSpec, ...]:
    replicas: list[ReplicaSpec] = []
    first_index: dict[str, int] = {}
    for index, t in doc.array_of_tables("replicas"):
        spec = _parse_replica(t, node)
        if spec.name and "name" not in t.bad:
            if spec.name in first_index:
                t.error(
                    "name",
                    f"{spec.name!r} is already used by [[replicas]][{first_index[spec.name]}]",
                )
            else:
                first_index[spec.name] = index
        replicas.append(spec)
    return tuple(replicas)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def parse_config(data: Mapping[str, Any], source: str) -> Config:
    """Validate already-decoded TOML; ``source`` labels messages and anchors relative paths."""
    errors: list[str] = []
    doc = _Table(data, "", source, errors)
    node = doc.table("node", _parse_node, required=True)
    cfg = Config(
        node=node,
        router=doc.table("router", _parse_router, required=True),
        metrics=doc.table("metrics", _parse_metrics, required=True),
        health=doc.table("health", _parse_health),
        thresholds=doc.table("thresholds", _parse_thresholds),
        slo=doc.table("slo", _parse_slo),
        replicas=_parse_replicas(doc, node.name),
        source=source,
        retry=doc.table("retry", _parse_retry),
        breaker=doc.table("breaker", _parse_breaker),
        cluster=doc.table("cluster", _parse_cluster) if "cluster" in data else None,
        api=doc.table("api", _parse_api) if "api" in data else None,
        models=_parse_models(doc),
    )
    if cfg.cluster is not None and cfg.node.advertise_host is None and not errors:
        errors.extend(_unadvertised(cfg))
    doc.known.extend(("cluster", "api"))  # optional sections: known, for "did you mean"
    for key, value in data.items():
        if key in doc.known:
            continue
        hint = (
            " (not supported by this version of hanode)"
            if key in _FUTURE_SECTIONS
            else _suggest(key, doc.known)
        )
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
        host = urlsplit(spec.url).hostname or ""
        if is_loopback_host(host):
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
