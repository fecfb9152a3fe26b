"""The sections that configure this node's endpoints: [node], [router], [metrics], [api]."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hanode.addresses import HostPort, is_wildcard_host, parse_host
from hanode.http.server import ServerLimits
from hanode.policies.hedge import HEDGE_CLASSES
from hanode.router.frontdoor import RouterSettings
from hanode.router.validation import RequestLimits
from hanode.settings.schema import bind, required, setting, settings
from hanode.settings.value_checks import NAME_RE, period


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
        check=period,
        to=RouterSettings,
    )
    stream_idle_timeout_s: float = setting(
        "the inter-token timeout: silence allowed inside an answer that has begun; a stream "
        "silent longer is continued on another replica (stream_continuation) or cut with an "
        "error event; the first token may take [retry].per_try_timeout_s",
        gt=0,
        to=RouterSettings,
    )
    stream_continuation: bool = setting(
        "a stream whose replica fails after the first byte (reset, stall, error event) is "
        "continued on another replica in the same client stream (docs/streaming.md)",
        to=RouterSettings,
    )
    stream_continuation_limit: int = setting(
        "continuations of one stream at most; then it ends with an error event",
        ge=0,
        to=RouterSettings,
    )
    hedge: str = setting(
        "hedged first tries: a second try on another replica once the first waited past the "
        "pool's p95 time to first byte, for these requests (unary = non-streamed); each "
        "hedge spends the retry budget",
        choices=HEDGE_CLASSES,
        to=RouterSettings,
    )
    connect_timeout_s: float = setting(
        "TCP connect to a replica before trying another", gt=0, check=period, to=RouterSettings
    )
    header_timeout_s: float = setting(
        "time a client has to send a whole request", gt=0, check=period, to=ServerLimits
    )
    idle_timeout_s: float = setting(
        "keep-alive connection idle time before closing", gt=0, check=period, to=ServerLimits
    )
    max_tokens_limit: int = setting(
        "requests asking for more max_tokens are rejected (400)",
        ge=1,
        to=bind(RequestLimits, "max_tokens"),
    )
    max_n: int = setting('largest "n" (choices per request) accepted', ge=1, to=RequestLimits)
    admission: bool = setting(
        "admission control: per model, requests beyond this router's share of the serving "
        "replicas' capacity wait in per-class queues or are shed with 429 (docs/degradation.md)",
        default=True,
    )
    max_concurrency: int = setting(
        "requests one replica serves at once, unless [[models]] max_concurrency says (or the "
        "engine queues: then what it runs)",
        default=32,
        ge=1,
    )
    default_class: str = setting(
        "the class of requests whose key names none ([[classes]])", default="interactive"
    )
    tls_cert_file: Path | None = setting(
        "serve the front door over TLS with this certificate chain (PEM); with tls_key_file",
        default=None,
        example="/etc/hanode/tls/gpu-node-1.crt",
    )
    tls_key_file: Path | None = setting(
        "the front door's TLS private key (PEM; a secret file: mode 0600)",
        default=None,
        example="/etc/hanode/tls/gpu-node-1.key",
    )
    drain_timeout_s: float = setting(
        "on stop: new requests get 503 and connection: close, in-flight ones get this long "
        "to finish before the node exits",
        default=30.0,
        ge=0,
    )
    drain_notice_s: float = setting(
        "on stop: keep answering 503 (/health too) at least this long before the port "
        "closes, so load balancers see it and send nothing more (a connection they open "
        "as the port closes is reset)",
        default=2.0,
        ge=0,
    )
    workers: int | str = setting(
        'data-plane processes accepting on the router port; "auto": one per usable core, at '
        "most 16. 1 serves from the node's own process; more run as child processes over one "
        "pool view the node publishes (docs/workers.md)",
        default=1,
        ge=1,
        choices=("auto",),
    )


@dataclass(frozen=True, slots=True)
@settings
class MetricsConfig:
    listen: HostPort = setting(
        "Prometheus /metrics, /status and /events; loopback unless a token_file guards it "
        "(exposed without one, the node warns at start)",
        default=HostPort("127.0.0.1", 9100),
    )
    token_file: Path | None = setting(
        "bearer token the ops endpoint requires (first line; a secret file: mode 0600); "
        "/health stays open",
        default=None,
        example="/etc/hanode/ops_token",
    )


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
    read_only_keys: tuple[str, ...] = setting(
        "bearer tokens that may only read (status, events, breakers, members, incidents)",
        default=(),
    )
    read_only_key_file: Path | None = setting(
        "one read-only token per line, '#' comments; merged with read_only_keys",
        default=None,
        example="/etc/hanode/ctl_read_keys",
    )
    tls_cert_file: Path | None = setting(
        "serve the control API over TLS with this certificate chain (PEM); the node also "
        "presents it to another node's API",
        default=None,
        example="/etc/hanode/tls/gpu-node-1.crt",
    )
    tls_key_file: Path | None = setting(
        "the control API's TLS private key (PEM; a secret file: mode 0600)",
        default=None,
        example="/etc/hanode/tls/gpu-node-1.key",
    )
    tls_client_ca_file: Path | None = setting(
        "require client certificates signed by this CA (mTLS; `hanode certs init` makes one)",
        default=None,
        example="/etc/hanode/tls/ca.crt",
    )
