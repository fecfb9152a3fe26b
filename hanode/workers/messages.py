"""What the node and its data-plane workers tell each other (see hanode.workers.channel).

Node -> worker: ``hello`` (:class:`Hello`, first), ``snapshot`` (a PoolSnapshot), ``breaker``
(:data:`BreakerOp`), ``routers`` (live routers sharing capacity), ``drain`` ((timeout_s,
notice_s)).

Worker -> node: ``ready`` (its pid), ``traffic`` (passive health rows), ``inflight``
({replica: tries in flight}), ``opened`` (a breaker it opened: (replica, failure class,
until)), ``event`` ((kind, subject, message, fields)), ``report`` (:class:`Report`),
``drained`` (requests still in flight when its drain ended).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hanode.http.server import ServerLimits
from hanode.metrics.merge import Family
from hanode.pool.snapshot import PoolSnapshot
from hanode.router.core import RouterSettings

# ("open", replica, failure class, until monotonic) or ("reset", replica, "", 0.0)
BreakerOp = tuple[str, str, str, float]
# replica, ok, latency_s, ttft_s, now (monotonic), tpot_s: TrafficObserver.record's arguments
TrafficRow = tuple[str, bool, float, float | None, float, float | None]


@dataclass(frozen=True, slots=True)
class Hello:
    index: int
    workers: int  # how many workers share the node's capacity
    host: str
    port: int
    settings: RouterSettings
    limits: ServerLimits
    tls_cert_file: Path | None
    tls_key_file: Path | None
    snapshot: PoolSnapshot
    routers: int
    breakers: tuple[BreakerOp, ...] = ()  # open breakers the node knows of at the start
    log_level: str = "info"
    log_json: bool = True
    report_every_s: float = 0.02  # in-flight counts and passive rows, when they changed
    metrics_every_s: float = 0.5


@dataclass(frozen=True, slots=True)
class Report:
    """A worker's periodic account: its metrics and its view of each breaker."""

    families: list[Family]
    breakers: dict[str, str] = field(default_factory=dict)  # replica -> state (not closed)
    requests: int = 0  # requests it answered since it started
    connections: int = 0
