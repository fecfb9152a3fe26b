"""`hanode run`: wire configuration, pool, health checkers, front door and ops endpoint.

This module only assembles parts; each part's behaviour lives in its own package.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson
import structlog

from hanode.actuators.assembly import HealthTee, build_supervisor
from hanode.actuators.supervisor import Supervisor, SupervisorSettings
from hanode.addresses import HostPort, is_loopback_host, is_wildcard_host
from hanode.api.credentials import channel_credentials
from hanode.api.forward import forward_transfer
from hanode.api.server import start_api_server
from hanode.cluster.addresses import advertised_hostport
from hanode.cluster.backend import ClusterControl
from hanode.cluster.raft_store import RaftStore
from hanode.cluster.runtime import ClusterRuntime
from hanode.config import Config
from hanode.engines.registry import get_adapter
from hanode.events import Event, EventLog
from hanode.gpu.nvml import GpuMemoryReader
from hanode.health.checker import GpuMarks, HealthSettings, ObservationSink, ReplicaChecker
from hanode.health.passive import PassiveStats
from hanode.http.server import HttpServer, ServerLimits
from hanode.metrics.endpoint import OpsEndpoint
from hanode.metrics.node_state import ClusterFacts, ProcessFacts
from hanode.metrics.registry import NodeMetrics
from hanode.policies.breaker import BreakerConfig
from hanode.policies.l3 import L3Thresholds
from hanode.policies.latency import LatencyTolerance
from hanode.policies.memory import GrowthWatch
from hanode.policies.restart import RestartPolicy
from hanode.policies.retry import RetryPolicy
from hanode.policies.slow_start import SlowStart
from hanode.policies.weights import WeightThresholds
from hanode.pool.snapshot import PoolView
from hanode.router.frontdoor import FrontDoor, RouterSettings
from hanode.router.validation import RequestLimits
from hanode.runtime import install_stall_drill, stop_on_signals
from hanode.sdnotify import Notifier
from hanode.security.secret_files import secret_file_problem
from hanode.security.tls import TlsError, TlsFiles, server_ssl_context
from hanode.service import drain_router, status_line
from hanode.settings.schema import build
from hanode.settings.sections_classes import build_admission
from hanode.standalone.pool import LocalPool
from hanode.status import status_document
from hanode.workers.count import resolve_workers
from hanode.workers.messages import Hello
from hanode.workers.plane import WorkerPlane, WorkerStartError, usable_cores

log = structlog.get_logger("hanode.daemon")

JOIN_WAIT_S = 20.0  # READY=1 at the latest this long after start (see Node._notify_ready)
LEAVE_S = 5.0  # a stopping leader's handover, at most


def router_settings(config: Config) -> RouterSettings:
    """The front door's settings: every field from the [router], [retry], [slo] and [breaker]
    keys bound to it in hanode.settings.sections, so a default cannot differ from the file's."""
    return build(
        RouterSettings,
        config.router,
        config.retry,
        config.slo,
        limits=build(RequestLimits, config.router),
        retry=build(RetryPolicy, config.retry),
        breaker=build(BreakerConfig, config.breaker),
        model_timeouts={
            m.name: m.request_timeout_s for m in config.models if m.request_timeout_s is not None
        },
        admission=build_admission(config.router, config.classes, config.api_keys, config.models),
    )


def server_limits(config: Config) -> ServerLimits:
    return build(ServerLimits, config.router)


class StartupError(Exception):
    """The node cannot start as configured (one line for the operator)."""


def _weight_thresholds(config: Config) -> WeightThresholds:
    latency = build(LatencyTolerance, config.thresholds)
    return build(WeightThresholds, config.thresholds, latency=latency)


def _l3_thresholds(config: Config) -> L3Thresholds:
    latency = build(LatencyTolerance, config.thresholds)
    return build(L3Thresholds, config.thresholds, latency=latency)


def growth_watches(config: Config, mark: float) -> dict[str, GrowthWatch]:
    """Replica name -> its device's growth watch: one per GPU index, shared by the replicas on
    it (their reservations all belong to its baseline); one of its own without an index."""
    on_gpu: dict[int, list[str]] = {}
    for spec in config.replicas:
        if spec.gpu is not None:
            on_gpu.setdefault(spec.gpu, []).append(spec.name)
    shared = {gpu: GrowthWatch(mark, frozenset(names)) for gpu, names in on_gpu.items()}
    return {
        spec.name: shared[spec.gpu]
        if spec.gpu is not None
        else GrowthWatch(mark, frozenset({spec.name}))
        for spec in config.replicas
    }


def _raft_password(config: Config, insecure_dev: bool) -> str | None:
    cluster = config.cluster
    assert cluster is not None
    if cluster.secret_file is None:
        if insecure_dev and not is_loopback_host(cluster.raft_listen.host):
            # Without a password a plain pickle frame runs code: never on a reachable port.
            raise StartupError(
                f"{config.source}: [cluster].raft_listen: --insecure-dev runs Raft without a "
                f"password, so it must listen on loopback (127.0.0.1 or ::1), not "
                f"{cluster.raft_listen}; set [cluster].secret_file instead"
            )
        if insecure_dev:
            log.warning(
                "raft_insecure",
                detail="--insecure-dev: Raft runs WITHOUT a password; anyone who can reach "
                f"{cluster.raft_listen} can make this node unpickle arbitrary data",
            )
            return None
        raise StartupError(
            f"{config.source}: [cluster].secret_file is required: the Raft port unpickles what "
            "it receives, so it must run with a password (or pass --insecure-dev on a dev box)"
        )
    try:
        secret = cluster.secret_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise StartupError(
            f"{config.source}: [cluster].secret_file: cannot read {cluster.secret_file}: "
            f"{exc.strerror or exc}"
        ) from None
    if len(secret) < 16:
        raise StartupError(
            f"{config.source}: [cluster].secret_file: the secret must be at least 16 characters"
        )
    return secret


def secret_files(config: Config) -> list[tuple[str, Path]]:
    """Every file of this config that holds a secret, with the key that names it."""
    router, api, cluster = config.router, config.api, config.cluster
    found = [
        ("[cluster].secret_file", cluster.secret_file if cluster else None),
        ("[router].api_key_file", router.api_key_file),
        ("[router].tls_key_file", router.tls_key_file),
        ("[metrics].token_file", config.metrics.token_file),
        ("[api].api_key_file", api.api_key_file if api else None),
        ("[api].read_only_key_file", api.read_only_key_file if api else None),
        ("[api].tls_key_file", api.tls_key_file if api else None),
    ]
    return [(key, path) for key, path in found if path is not None]


def check_secret_files(config: Config) -> None:
    """Refuse to start with a secret file that group or others may read (one line)."""
    for key, path in secret_files(config):
        problem = secret_file_problem(path)
        if problem is not None:
            raise StartupError(f"{config.source}: {key}: {problem}")


def read_token(path: Path) -> str:
    """The first line of a token file that is not blank or a '#' comment."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            if len(token) < 16:
                raise StartupError(f"{path}: the token must be at least 16 characters")
            return token
    raise StartupError(f"{path} holds no token")


def api_tls(config: Config) -> TlsFiles | None:
    api = config.api
    if api is None or api.tls_cert_file is None or api.tls_key_file is None:
        return None
    return TlsFiles(api.tls_cert_file, api.tls_key_file, api.tls_client_ca_file)


def listens(config: Config) -> list[tuple[str, HostPort]]:
    """Every address this node binds, with the key that sets it."""
    out = [("[router].listen", config.router.listen), ("[metrics].listen", config.metrics.listen)]
    if config.cluster is not None:
        out.append(("[cluster].raft_listen", config.cluster.raft_listen))
        if config.api is not None:
            out.append(("[api].listen", config.api.listen))
    return out


def listen_conflicts(config: Config) -> list[str]:
    """Pairs of listens that would take the same port (same host, or one a wildcard)."""
    found = []
    items = listens(config)
    for i, (key, a) in enumerate(items):
        for other, b in items[i + 1 :]:
            same_host = a.host == b.host or is_wildcard_host(a.host) or is_wildcard_host(b.host)
            if a.port == b.port and same_host:
                found.append(f"{config.source}: {key} {a} and {other} {b} use the same port")
    return found


async def _bind(key: str, address: HostPort, config: Config, start: Awaitable[Any]) -> Any:
    """Bind one listener; a failure names the key and address (not a bare [Errno 98])."""
    try:
        return await start
    except OSError as exc:
        why = exc.strerror or str(exc)
        if not why.startswith("cannot listen"):
            why = f"cannot listen on {address}: {why}"
        raise StartupError(f"{config.source}: {key}: {why}") from None


def _probe_raft_listen(config: Config) -> None:
    """pysyncobj binds in its own thread and retries for ever: check the port first, so a
    conflict stops the start with the key named."""
    assert config.cluster is not None
    address = config.cluster.raft_listen
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address.host, address.port))
        except OSError as exc:
            raise StartupError(
                f"{config.source}: [cluster].raft_listen: cannot listen on {address}: "
                f"{exc.strerror or exc}"
            ) from None


class Node:
    """One running hanode node: standalone (local pool) or a cluster member (Raft)."""

    def __init__(
        self,
        config: Config,
        insecure_dev: bool = False,
        log_level: str = "info",
        log_json: bool = True,
    ) -> None:
        self.config = config
        self.insecure_dev = insecure_dev
        self.metrics = NodeMetrics()
        self.events = EventLog()
        self.passive = PassiveStats(config.health.passive_window_s)
        self.checkers: dict[str, ReplicaChecker] = {}
        self.local_pool: LocalPool | None = None
        self.cluster: ClusterRuntime | None = None
        self.control: ClusterControl | None = None
        self.pool_view: PoolView
        self.gpu = GpuMemoryReader()
        self.stop = asyncio.Event()
        self.exit_code = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._servers: list[HttpServer] = []
        self._grpc: Any = None
        self._store: RaftStore | None = None
        self.door: FrontDoor | None = None
        # Starts, restarts, sleeps and wakes the replicas with an actuator (docs/recovery.md);
        # None when no replica has one. The cluster side calls its set_desired/restart.
        self.supervisor: Supervisor | None = None
        # systemd's notify socket (a no-op outside systemd): READY, STATUS, WATCHDOG, STOPPING.
        self.notifier = Notifier()
        self.router_server: HttpServer | None = None
        # [router] workers > 1: the data-plane workers serving the router port.
        self.plane: WorkerPlane | None = None
        self.log_level, self.log_json = log_level, log_json

    def status(self) -> dict[str, Any]:
        doc = self._with_processes(self._status())
        if self.plane is not None:  # each data-plane worker: pid, restarts, requests, breakers
            doc["workers"] = self.plane.status()
        return doc

    def _with_processes(self, doc: dict[str, Any]) -> dict[str, Any]:
        """What the supervisor sees of this node's replica processes, under "process"."""
        if self.supervisor is not None:
            reports = self.supervisor.observed()
            for replica in doc.get("replicas", []):
                report = reports.get(replica.get("name", ""))
                if report is not None:
                    replica["process"] = report.as_dict()
        return doc

    def _status(self) -> dict[str, Any]:
        if self.control is not None:
            return self.control.status()
        door = self.door
        loop = asyncio.get_running_loop()
        return status_document(
            self.config.node.name,
            self.pool_view.snapshot,
            door.breakers if door else {},
            door.inflight if door else {},
            [e.as_dict() for e in self.events.recent(20)],
            loop.time(),
        )

    def _events(self, after: int, limit: int) -> list[dict[str, Any]]:
        if self.control is not None:
            return self.control.events(after, limit)
        return [e.as_dict() for e in self.events.recent(limit, after)]

    def _rollout_metrics(self, ro: Any) -> None:
        """A rolling reload ended (``cluster.view.RolloutRecord``): its duration, and how long
        each replica was out of routing."""
        self.metrics.rollout_duration.labels(ro.model, ro.state).observe(ro.duration_s or 0.0)
        for step in ro.replicas:
            if step.unavailable_s is not None:
                self.metrics.rollout_unavailable.labels(ro.model).observe(step.unavailable_s)

    def _fatal(self, problem: str) -> None:
        """Consensus stopped working: exit non-zero so the service manager restarts us,
        rather than serve a view that can no longer change."""
        log.error("node_exiting", node=self.config.node.name, reason=problem)
        self.exit_code = 1
        self.stop.set()

    def _make_pool(self) -> ObservationSink:
        config = self.config
        thresholds = _weight_thresholds(config)
        if config.cluster is None:
            self.local_pool = LocalPool(
                config.replicas, thresholds, build(SlowStart, config.health)
            )
            self.pool_view = self.local_pool
            return self.local_pool
        c = config.cluster
        password = _raft_password(config, self.insecure_dev)
        _probe_raft_listen(config)
        self._store = RaftStore(
            # A wildcard raft_listen binds every address; peers know this node by its advertised
            # one, so pysyncobj must name itself by it too.
            advertised_hostport(str(c.raft_listen), config.node.advertise_host)
            if is_wildcard_host(c.raft_listen.host)
            else str(c.raft_listen),
            [str(p) for p in c.peers],
            config.node.data_dir / "raft",
            password,
            election_timeout=(c.election_min_s, c.election_max_s),
            bind_address=str(c.raft_listen),
        )
        self.cluster = ClusterRuntime(
            config, self._store, thresholds, self.events, on_fatal=self._fatal
        )
        self.pool_view = self.cluster.pool
        return self.cluster.reporter

    async def start(self) -> None:
        config = self.config
        conflicts = listen_conflicts(config)
        if conflicts:
            raise StartupError(conflicts[0])
        check_secret_files(config)
        try:
            router_tls = (
                server_ssl_context(
                    TlsFiles(config.router.tls_cert_file, config.router.tls_key_file)
                )
                if config.router.tls_cert_file is not None and config.router.tls_key_file
                else None
            )
        except TlsError as exc:
            raise StartupError(f"{config.source}: [router].tls_cert_file: {exc}") from None
        ops_token = read_token(config.metrics.token_file) if config.metrics.token_file else None
        sink = self._make_pool()
        self.supervisor = self._make_supervisor()
        if self.supervisor is not None:
            sink = HealthTee(sink, self.supervisor)
            self.supervisor.on_began(self._replica_began)
            self.events.subscribe(self._count_recovery)
        self.door = FrontDoor(
            self.pool_view, router_settings(config), self.metrics, self.passive, self.events
        )
        door = self.door
        self.metrics.watch_pool(lambda: self.pool_view.snapshot, lambda: dict(door.inflight))
        self.metrics.watch_node(self._cluster_facts, self._process_facts)

        def on_error(exc: Exception) -> None:
            log.error("handler_error", error=repr(exc))

        workers = resolve_workers(config.router.workers, usable_cores())
        if workers > 1:
            host, port = await self._start_workers(workers)
        else:
            router = HttpServer(door.handle, server_limits(config), on_error)
            host, port = await _bind(
                "[router].listen",
                config.router.listen,
                config,
                router.listen(config.router.listen.host, config.router.listen.port, tls=router_tls),
            )
            self._servers.append(router)
            self.router_server = router
        ops = OpsEndpoint(self.metrics, self.status, self._events, ops_token)
        if ops_token is None and not is_loopback_host(config.metrics.listen.host):
            log.warning(
                "ops_endpoint_exposed_without_token",
                listen=str(config.metrics.listen),
                detail="/metrics, /status and /events show replica URLs, events and node "
                "addresses to anyone who reaches them: set [metrics].token_file or listen on "
                "loopback",
            )
        ops_server = HttpServer(ops.handle, ServerLimits(max_body_bytes=64 * 1024), on_error)
        mhost, mport = await _bind(
            "[metrics].listen",
            config.metrics.listen,
            config,
            ops_server.listen(config.metrics.listen.host, config.metrics.listen.port),
        )
        self._servers.append(ops_server)
        api_port = 0
        if self.cluster is not None:
            self.cluster.attach(door.core)
            token = config.api.api_keys[0] if config.api and config.api.api_keys else ""
            tls = api_tls(config)
            try:
                forward = (
                    forward_transfer
                    if tls is None  # to another node's API over TLS, as its client
                    else functools.partial(
                        forward_transfer,
                        credentials=channel_credentials(tls.ca(), tls.cert(), tls.key()),
                    )
                )
            except TlsError as exc:
                raise StartupError(f"{config.source}: [api].tls_cert_file: {exc}") from None
            self.control = ClusterControl(self.cluster, door.core, token, forward)
            if config.api is not None:
                self._grpc, api_port = await _bind(
                    "[api].listen",
                    config.api.listen,
                    config,
                    start_api_server(
                        self.control,
                        config.api.listen.host,
                        config.api.listen.port,
                        config.api.api_keys,
                        config.api.read_only_keys,
                        tls,
                    ),
                )
            assert config.cluster is not None
            if self.supervisor is not None:  # replicated desired states and restart requests
                self.cluster.attach_supervisor(
                    self.supervisor, {a.name: a for a in config.actuators}
                )
            mttr = self.metrics.mttr
            self.cluster.listen_incidents(
                lambda inc: mttr.labels(inc.model).observe(inc.mttr_s or 0.0)
            )
            self.cluster.listen_rollouts(self._rollout_metrics)
            self.cluster.start(
                {
                    "raft": str(config.cluster.raft_listen),
                    "api": f"{config.api.listen.host}:{api_port}" if config.api else "",
                    "router": f"{host}:{port}",
                    "ops": f"{mhost}:{mport}",
                }
            )
        settings = build(HealthSettings, config.health)
        l3 = _l3_thresholds(config)
        marks = build(GpuMarks, config.thresholds)
        watches = growth_watches(config, l3.gpu_growth)
        for spec in config.replicas:
            checker = ReplicaChecker(
                spec,
                get_adapter(spec.engine),
                settings,
                l3,
                marks,
                sink,
                self.passive,
                self.gpu,
                self.events,
                self.metrics,
                peers=self.pool_view,
                growth=watches[spec.name],
                l2_path=spec.l2_path,
            )
            self.checkers[spec.name] = checker  # relearn_memory_baseline() after a wake
            self._tasks.append(asyncio.create_task(checker.run(self.stop)))
        if self.supervisor is not None:
            self.supervisor.start()
        log.info(
            "node_started",
            node=config.node.name,
            router=f"{host}:{port}",
            metrics=f"{mhost}:{mport}",
            api=api_port or None,
            cluster=str(config.cluster.raft_listen) if config.cluster else None,
            replicas=len(config.replicas),
        )
        # One machine-readable line on stdout for scripts and tests that start us.
        line = {"event": "listening", "router_port": port, "metrics_port": mport}
        if api_port:
            line["api_port"] = api_port
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()
        loop = asyncio.get_running_loop()
        self.notifier.start_watchdog(loop, self.status_line)
        self._tasks.append(loop.create_task(self._notify_ready()))

    async def _start_workers(self, workers: int) -> tuple[str, int]:
        """``[router] workers`` > 1: child processes serve the router port (hanode.workers);
        this process keeps consensus, checks, the supervisor and the APIs."""
        config, door = self.config, self.door
        assert door is not None
        listen = config.router.listen
        hello = Hello(
            index=0,
            workers=workers,
            host=listen.host,
            port=listen.port,
            settings=router_settings(config),
            limits=server_limits(config),
            tls_cert_file=config.router.tls_cert_file,
            tls_key_file=config.router.tls_key_file,
            snapshot=self.pool_view.snapshot,
            routers=1,
            log_level=self.log_level,
            log_json=self.log_json,
        )
        self.plane = WorkerPlane(
            workers, hello, self.pool_view, door.core, self.passive, self.events
        )
        self.metrics.merge_with(self.plane.families)
        try:
            address: tuple[str, int] = await _bind(
                "[router].listen", listen, config, self.plane.start()
            )
            return address
        except WorkerStartError as exc:
            raise StartupError(f"{config.source}: [router].workers: {exc}") from None

    def _cluster_facts(self) -> ClusterFacts | None:
        if self.cluster is None:
            return None
        st = self.cluster.store.status()
        return ClusterFacts(
            has_quorum=st.has_quorum,
            is_leader=st.is_leader,
            leader_known=st.leader_address is not None,
            members=len(st.members),
            connected=len(st.connected),
        )

    def _process_facts(self) -> dict[str, ProcessFacts]:
        if self.supervisor is None:
            return {}
        return {
            name: ProcessFacts(r.observed.value, r.restarts)
            for name, r in self.supervisor.observed().items()
        }

    def status_line(self) -> str:
        """systemd's STATUS=: role, leader and replica counts."""
        snap = self.pool_view.snapshot
        if self.cluster is None:
            return status_line("standalone", None, snap)
        st = self.cluster.store.status()
        return status_line(
            "leader" if st.is_leader else "follower", self.cluster.leader_name(), snap
        )

    def joined(self) -> bool:
        """Standalone, or a member that sees a quorum and its own node record."""
        if self.cluster is None:
            return True
        store = self.cluster.store
        return store.status().has_quorum and self.config.node.name in store.view.nodes

    async def _notify_ready(self) -> None:
        """READY=1 once the node has joined (the router already listens); a node that cannot
        join within JOIN_WAIT_S says READY anyway, serving what it knows (fail static), so a
        rolling start of a new cluster is not a deadlock of hosts waiting on each other."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + JOIN_WAIT_S
        while not self.joined() and loop.time() < give_up:
            await asyncio.sleep(0.1)
        if not self.joined():
            log.warning("ready_without_cluster", waited_s=JOIN_WAIT_S)
        self.notifier.ready(self.status_line())

    async def stop_gracefully(self) -> None:
        """STOPPING=1; the router drains (new requests 503, in-flight ones finish, bounded);
        a leader hands leadership over; then everything closes."""
        self.notifier.stopping("draining")
        router = self.config.router
        if self.door is not None and self.router_server is not None:
            await drain_router(
                self.door, self.router_server, router.drain_timeout_s, router.drain_notice_s
            )
        if self.plane is not None:
            await self.plane.drain(router.drain_timeout_s, router.drain_notice_s)
        if self.exit_code == 0 and self.cluster is not None and self.control is not None:
            st = self.cluster.store.status()
            if st.is_leader and len(st.members) > 1:
                self.notifier.status("handing leadership over")
                try:
                    new = await asyncio.wait_for(self.control.transfer_leader(None), LEAVE_S)
                    log.info("leadership_handed_over", new_leader=new)
                except Exception as exc:  # best effort: the others elect one anyway
                    log.warning("leadership_handover_failed", error=repr(exc))
        self.notifier.status("stopping")
        await self.close()

    def _count_recovery(self, event: Event) -> None:
        if event.kind == "restart":
            self.metrics.replica_restarts.labels(event.subject).inc()
        elif event.kind == "crash_loop":
            self.metrics.crash_loops.labels(event.subject).inc()

    def _replica_began(self, name: str) -> None:
        checker = self.checkers.get(name)
        if checker is not None:  # a new process, or a woken engine: new memory baseline
            checker.relearn_memory_baseline()

    def _make_supervisor(self) -> Supervisor | None:
        config, health = self.config, self.config.health
        # The checker may report what it saw of a replica's previous process for up to
        # `fall` checks (and the one in flight) after it died; a restarted replica's health
        # counts only after that.
        settle_s = (health.fall + 1) * (health.interval_s + health.timeout_s)
        return build_supervisor(
            config.replicas,
            config.actuators,
            config.node.data_dir,
            self.events,
            build(SupervisorSettings, config.recovery, health_settle_s=settle_s),
            build(RestartPolicy, config.recovery),
            health.l2_prompt,
            health.l2_max_tokens,
        )

    async def close(self) -> None:
        self.stop.set()
        if self.supervisor is not None:  # the replicas keep running; the next daemon adopts
            await self.supervisor.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.cluster is not None:
            await self.cluster.close()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        for server in self._servers:
            await server.close()
        if self.plane is not None:
            await self.plane.close()
        if self.door is not None:
            self.door.close()
        if self._store is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._store.close)
        self.gpu.close()
        self.notifier.close()


async def run_node(
    config: Config, insecure_dev: bool = False, log_level: str = "info", log_json: bool = True
) -> int:
    node = Node(config, insecure_dev, log_level, log_json)
    stop_on_signals(node.stop)
    if install_stall_drill():
        log.warning(
            "stall_drill_armed", detail="SIGUSR2 blocks the event loop (HANODE_STALL_DRILL_S)"
        )
    try:
        await node.start()
    except StartupError:
        await node.close()
        raise
    await node.stop.wait()
    log.info("node_stopping", node=config.node.name)
    await node.stop_gracefully()
    return node.exit_code
