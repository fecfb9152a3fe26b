"""A node's part in the cluster: wires the store to the router, the agent and the leader loop.

- every applied state becomes the router's pool snapshot (fail static: a node cut off from the
  majority keeps routing on the last state it saw, plus its local breakers);
- a breaker this node's router opened on evidence about the replica itself is replicated as a
  duration; breakers opened elsewhere are forced open locally, within the ejection limit;
  operator resets travel the same way;
- this node's health checkers report through the agent (hysteresis, heartbeat);
- the consensus thread is watched: if it dies or stalls, the node says so and stops;
- the leader loop (``leader.py``) runs on every node and acts while its node leads;
- with a supervisor (``attach_supervisor``), this node's replicas follow the replicated
  desired state and restart requests, and their process state is reported (``reconcile``);
- replicas back in service ramp up their weight (slow start), and each incident whose
  capacity came back is handed to the incident listeners (the MTTR histogram).
Every write is idempotent, so a timed-out write is simply retried later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import structlog

from hanode.actuators.engine_reload import RELOAD_ENGINES, EngineReload
from hanode.cluster.addresses import advertised_hostport, advertised_url
from hanode.cluster.agent import ObservationReporter, ReportHysteresis
from hanode.cluster.checkpoints import divergence
from hanode.cluster.document import OBS_FIELDS_SINCE, Command, spec_doc, stamp
from hanode.cluster.leader import LeaderLoop, LeaderSettings
from hanode.cluster.planner import ModelPolicy, PlannerSettings, Redundancy
from hanode.cluster.pool import ClusterPool
from hanode.cluster.reconcile import NodeActuation, Reconciler
from hanode.cluster.rollout import RolloutSettings
from hanode.cluster.rollout_node import RolloutNode
from hanode.cluster.store import ClusterStore, ConsensusRejected, ConsensusTimeout
from hanode.cluster.view import ClusterView, IncidentRecord, RolloutRecord
from hanode.cluster.warmup import warm_up
from hanode.config import Config
from hanode.events import Event, EventLog
from hanode.policies.breaker import ReplicaBreaker, Transition
from hanode.policies.ejection import may_eject_for_peer
from hanode.policies.failure import FailureClass
from hanode.policies.slow_start import SlowStart
from hanode.policies.weights import WeightThresholds
from hanode.pool.lifecycle import ActuatorSpec
from hanode.settings.schema import build

log = structlog.get_logger("hanode.cluster")

_LOCAL_ONLY_EVENTS = {"health"}  # the state machine records these itself
CONSENSUS_STALL_S = 10.0  # a consensus thread silent this long is taken for dead
RAMP_REFRESH_S = 0.5  # how often weights are recomputed while a replica ramps up
MAX_RESYNCS = 3  # a node that diverges more often than this stops (see _check_state)


class RouterPort(Protocol):
    """What the cluster needs of a router (``RouterCore`` implements it): its breakers, a way
    to report the changes a peer caused, and the opens to replicate."""

    loop: asyncio.AbstractEventLoop

    def listen_breaker_opens(self, listener: Callable[[str, str, float], None]) -> None: ...

    def breaker(self, replica: str) -> ReplicaBreaker: ...

    def breaker_changed(
        self, replica: str, transitions: Sequence[Transition], *, local: bool = True
    ) -> None: ...

    def pool_changed(self) -> None:
        """A new pool snapshot is out: fail over tries on replicas it no longer lets serve."""
        ...

    def peer_opened(self, replica: str, failure: FailureClass, until: float) -> None:
        """Apply a breaker another node opened (until ``until``, monotonic)."""
        ...

    def reset_breaker(self, replica: str) -> None:
        """Apply an operator's breaker reset."""
        ...


class ClusterRuntime:
    def __init__(
        self,
        config: Config,
        store: ClusterStore,
        thresholds: WeightThresholds,
        events: EventLog,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        assert config.cluster is not None
        self.config = config
        self.node = config.node.name
        self.store = store
        self.pool = ClusterPool(
            thresholds,
            {s.name: s for s in config.replicas},
            build(SlowStart, config.health),
        )
        self.events = events
        self.on_fatal = on_fatal
        self.consensus_failure: str | None = None
        self.reporter = ObservationReporter(
            self._send_observation, ReportHysteresis(heartbeat_s=config.cluster.heartbeat_s)
        )
        policies: Mapping[str, ModelPolicy] = {
            m.name: ModelPolicy(m.name, m.min_active, Redundancy(m.redundancy))
            for m in config.models
        }
        planner = PlannerSettings(
            weights=thresholds,
            gpu_prepare=config.thresholds.gpu_mem_prepare,
            demote_hold_s=config.cluster.demote_hold_s,
        )
        self.leader = LeaderLoop(
            self.node,
            store,
            self.write,
            policies,
            planner,
            LeaderSettings(
                config.cluster.planner_interval_s,
                config.cluster.node_lease_s,
                config.cluster.checkpoint_s,
                RolloutSettings(
                    reload_timeout_s=config.cluster.rollout_reload_timeout_s,
                    ramp_s=config.health.slow_start_s,
                    warmup_prompts=config.cluster.rollout_warmup_prompts,
                ),
            ),
            warm_up=warm_up,
        )
        self.rollout_node: RolloutNode | None = None
        self.max_ejection_percent = config.breaker.max_ejection_percent
        self.door: RouterPort | None = None
        self._loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task[None]] = []
        self._seen_breakers: set[tuple[str, str]] = set()
        self._seen_resets: dict[str, float] | None = None  # None until the first view
        self.skipped_peer_opens = 0
        self._addresses: Mapping[str, str] = {}
        self._registering: asyncio.Task[None] | None = None
        self._reported_checkpoint = ""
        self._resynced_at = ""  # the checkpoint that made us resync: not judged twice
        self.resyncing = False
        self.resyncs = 0
        self.reconciler: Reconciler | None = None
        self._actuated: Mapping[str, ActuatorSpec] = {}
        self._incident_listeners: list[Callable[[IncidentRecord], None]] = []
        self._restored_seen: set[str] = set()
        self._rollout_listeners: list[Callable[[RolloutRecord], None]] = []
        self._rollouts_seen: set[str] = set()
        self._started_wall = time.time()
        self._ramp_timer: asyncio.TimerHandle | None = None
        store.subscribe(self._on_view)
        events.subscribe(self._forward_event)

    # -- start and stop ------------------------------------------------------------------------
    def attach(self, door: RouterPort) -> None:
        self.door = door
        inflight: Mapping[str, int] = getattr(door, "inflight", {})
        self.rollout_node = RolloutNode(
            self.node,
            self._send_with_failure,
            lambda: inflight,
            lambda view: min(view.cluster_version, self.store.protocol),
            self._engine_reloads(),
        )
        door.listen_breaker_opens(self._local_breaker_opened)
        self._on_view(self.store.view)

    def attach_supervisor(
        self, actuation: NodeActuation, specs: Mapping[str, ActuatorSpec]
    ) -> None:
        """This node acts on its replicas (before ``start``): ``specs`` are their local
        actuator settings, of which only "has an actuator" and the standby mode are
        replicated, never the command."""
        self._actuated = {n: s for n, s in specs.items() if s.actuator != "none"}
        self.reconciler = Reconciler(
            self.node,
            actuation,
            self._send_with_failure,
            lambda view: min(view.cluster_version, self.store.protocol),
        )
        self.reconciler.on_view(self.store.view)
        if self.rollout_node is not None:
            self.rollout_node.set_reloads(self._engine_reloads())

    def _engine_reloads(self) -> dict[str, Any]:
        """The engine reload calls of this node's ``reload = "engine"`` replicas."""
        specs = {s.name: s for s in self.config.replicas}
        return {
            name: EngineReload(
                specs[name].url,
                specs[name].engine,
                specs[name].model,
                self.config.cluster.rollout_reload_timeout_s if self.config.cluster else 600.0,
            ).reload
            for name, a in self._actuated.items()
            if a.reload == "engine" and name in specs and specs[name].engine in RELOAD_ENGINES
        }

    def listen_incidents(self, listener: Callable[[IncidentRecord], None]) -> None:
        """Call ``listener`` once for each incident whose capacity came back (its MTTR)
        after this node started."""
        self._incident_listeners.append(listener)

    def start(self, addresses: Mapping[str, str]) -> None:
        self._addresses = dict(addresses)
        self._start_register()
        self._tasks.append(self._loop.create_task(self.leader.run()))
        self._tasks.append(self._loop.create_task(self._watch_consensus()))

    async def close(self) -> None:
        if self._ramp_timer is not None:
            self._ramp_timer.cancel()
        if self.reconciler is not None:
            self.reconciler.close()
        if self.rollout_node is not None:
            self.rollout_node.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- writes --------------------------------------------------------------------------------
    async def write(self, command: Command, timeout: float = 3.0) -> Any:
        """Replicate one command (stamped with the protocol it needs and a display time)."""
        command.setdefault("ts", time.time())
        return await self.store.submit(stamp(command), timeout)

    def _spawn_write(self, command: Command, on_failure: Callable[[], None] | None = None) -> None:
        async def go() -> None:
            try:
                await self.write(command)
            except (ConsensusTimeout, ConsensusRejected) as exc:
                log.info("cluster_write_failed", op=command.get("op"), error=str(exc))
                if on_failure is not None:
                    on_failure()

        self._loop.create_task(go())

    def _send_with_failure(self, command: Command, on_failure: Callable[[], None]) -> None:
        self._spawn_write(command, on_failure=on_failure)

    def _send_observation(self, command: Command) -> None:
        replica = str(command["replica"])
        version = min(self.store.view.cluster_version, self.store.protocol)
        obs = command["obs"]
        for key, since in OBS_FIELDS_SINCE.items():
            if version < since:
                obs.pop(key, None)
        self._spawn_write(command, on_failure=lambda: self.reporter.forget(replica))

    def advertised(self, addresses: Mapping[str, str]) -> dict[str, str]:
        """This node's addresses as other nodes must dial them."""
        host = self.config.node.advertise_host
        return {k: advertised_hostport(v, host) if v else v for k, v in addresses.items()}

    async def _register(self, addresses: Mapping[str, str]) -> None:
        """Announce this node and its replicas; retried until the cluster has taken them."""
        host = self.config.node.advertise_host
        commands: list[Command] = [
            {
                "op": "register_node",
                "name": self.node,
                "protocol": self.store.protocol,
                **self.advertised(addresses),
            }
        ]
        commands += [
            {
                "op": "register_replica",
                "spec": self._spec_doc(replace(s, url=advertised_url(s.url, host))),
            }
            for s in self.config.replicas
        ]
        delay = 0.2
        for command in commands:
            while True:
                try:
                    await self.write(dict(command), timeout=5.0)
                    break
                except (ConsensusTimeout, ConsensusRejected) as exc:
                    log.info("cluster_register_retry", op=command["op"], error=str(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        for spec in self.config.replicas:
            self.reporter.forget(spec.name)  # report current health right away
        log.info("cluster_registered", node=self.node, replicas=len(self.config.replicas))

    def _spec_doc(self, spec: Any) -> dict[str, Any]:
        """The replicated spec: with "can be acted on" and the standby mode, no command."""
        doc = spec_doc(spec)
        actuation = self._actuated.get(spec.name)
        if actuation is not None:
            doc["actuated"] = True
            doc["standby"] = actuation.standby.value
            if actuation.reload != "restart":
                doc["reload"] = actuation.reload
        return doc

    # -- the consensus thread ------------------------------------------------------------------
    async def _watch_consensus(self) -> None:
        while self.consensus_failure is None:
            await asyncio.sleep(1.0)
            problem = self.store.consensus_problem(CONSENSUS_STALL_S)
            if problem is not None:
                self.consensus_failure = problem
                log.error("consensus_failed", node=self.node, problem=problem)
                if self.on_fatal is not None:
                    self.on_fatal(problem)

    # -- applied states ------------------------------------------------------------------------
    def _on_view(self, view: ClusterView) -> None:
        self.pool.update(view, self._loop.time())
        self._schedule_ramp()
        if self.reconciler is not None:
            self.reconciler.on_view(view)
        if self.rollout_node is not None:
            self.rollout_node.on_view(view)
        self._announce_incidents(view)
        self._announce_rollouts(view)
        self._resend_changed_observations(view)
        self._check_state(view)
        self._check_registered(view)
        door = self.door
        if door is None:
            return
        # Each router admits its share: capacity / live routers (docs/degradation.md).
        gate = getattr(door, "admission", None)
        if gate is not None:
            gate.set_routers(sum(1 for n in view.nodes.values() if not n.lost))
        door.pool_changed()  # e.g. a lost node's replicas: their tries fail over at once
        self._apply_peer_breakers(door, view)
        self._apply_resets(door, view)

    def _schedule_ramp(self) -> None:
        """While a replica ramps up (slow start), rebuild the snapshot every RAMP_REFRESH_S."""
        if self._ramp_timer is not None or not self.pool.ramp(self._loop.time()):
            return

        def tick() -> None:
            self._ramp_timer = None
            if self.pool.refresh(self._loop.time()):
                self._schedule_ramp()

        self._ramp_timer = self._loop.call_later(RAMP_REFRESH_S, tick)

    def listen_rollouts(self, listener: Callable[[RolloutRecord], None]) -> None:
        """Call ``listener`` once for each rollout that ended after this node started
        (its duration and each replica's unavailable time are in the record)."""
        self._rollout_listeners.append(listener)

    def _announce_rollouts(self, view: ClusterView) -> None:
        for ro in view.rollouts.values():
            key = f"{ro.model}/{ro.id}"
            if ro.running or key in self._rollouts_seen:
                continue
            self._rollouts_seen.add(key)
            if ro.finished is not None and ro.finished >= self._started_wall:
                for listener in self._rollout_listeners:
                    listener(ro)

    def _announce_incidents(self, view: ClusterView) -> None:
        """Each node exports the same MTTRs, from the replicated incidents; one restored before
        this process started (a replayed log) is not counted again."""
        for inc in view.incidents:
            if inc.mttr_s is None or inc.id in self._restored_seen:
                continue
            self._restored_seen.add(inc.id)
            if inc.restored is not None and inc.restored >= self._started_wall:
                for listener in self._incident_listeners:
                    listener(inc)
        self._restored_seen &= {i.id for i in view.incidents}

    # -- is our state the cluster's? ------------------------------------------------------------
    def _check_state(self, view: ClusterView) -> None:
        """Report our digest at each new checkpoint; take the cluster's state again when a
        majority reported another one."""
        cid = view.checkpoint_id
        if not cid or self.resyncing or cid == self._resynced_at:
            return
        own = self.store.checkpoint_digest(cid)
        if own is None:
            return
        if cid != self._reported_checkpoint:
            self._reported_checkpoint = cid
            self._spawn_write(
                {"op": "checkpoint_report", "id": cid, "node": self.node, "digest": own}
            )
        why = divergence(view, own)
        if why is None:
            return
        if self.resyncs >= MAX_RESYNCS:
            # Diverging again and again is a bug (a non-deterministic command, say), not bad
            # luck: stop rather than keep serving from a state nobody else has.
            self.resyncing = True
            if self.on_fatal is not None:
                self.on_fatal(f"state diverged again after {self.resyncs} resyncs: {why}")
            return
        self.resyncing = True
        self._resynced_at = cid
        self._tasks.append(self._loop.create_task(self._resync(why)))

    async def _resync(self, why: str) -> None:
        log.error("state_diverged", node=self.node, why=why)
        try:
            aside = await self.store.resync(why)
        except Exception as exc:  # cannot rebuild in place: let the service manager restart us
            log.exception("resync_failed")
            if self.on_fatal is not None:
                self.on_fatal(f"state diverged ({why}) and the resync failed: {exc!r}")
            return
        self.resyncs += 1
        self._seen_breakers.clear()
        self._reported_checkpoint = ""
        for spec in self.config.replicas:
            self.reporter.forget(spec.name)
        self.resyncing = False
        self.events.add(
            "consensus",
            self.node,
            f"state diverged from the cluster ({why}); took the cluster's state again, "
            f"the old one is kept in {aside}",
        )
        self._start_register()

    def _start_register(self) -> None:
        if self._registering is not None and not self._registering.done():
            return
        self._registering = self._loop.create_task(self._register(self._addresses))
        self._tasks.append(self._registering)

    def _check_registered(self, view: ClusterView) -> None:
        """A member whose node record is gone (``members remove`` wrote ``forget_node``, then
        ``members add`` took it back without a restart) registers itself and its replicas
        again; otherwise they would stay out of every router for good."""
        if not self._addresses or self.node in view.nodes or not view.nodes:
            return
        if self.resyncing or not self.store.status().has_quorum:
            return  # not (yet) a working member: nothing to write through
        if self._registering is None or self._registering.done():
            log.warning("cluster_reregister", node=self.node, reason="own node record missing")
        self._start_register()

    def _resend_changed_observations(self, view: ClusterView) -> None:
        """When the state says something else of our replicas than we last reported (a lease
        marked them down, say), report afresh instead of waiting for the heartbeat."""
        for spec in self.config.replicas:
            rec = view.replicas.get(spec.name)
            sent = self.reporter.sent(spec.name)
            if rec is not None and sent is not None and rec.observation.level != sent.level:
                self.reporter.forget(spec.name)

    def _apply_peer_breakers(self, door: RouterPort, view: ClusterView) -> None:
        now = door.loop.time()
        current = {(name, rec.id) for name, rec in view.breakers.items()}
        self._seen_breakers &= current
        snap = self.pool.snapshot
        for name, rec in view.breakers.items():
            key = (name, rec.id)
            if rec.node == self.node or key in self._seen_breakers:
                continue
            self._seen_breakers.add(key)
            state = snap.replicas.get(name)
            if state is None:
                continue
            route = snap.routes.get(state.spec.model)
            serving = route.names if route is not None else ()
            ejected = sum(1 for n in serving if door.breaker(n).snapshot(now)["state"] == "open")
            if name in serving and not may_eject_for_peer(
                len(serving), ejected, self.max_ejection_percent
            ):
                self.skipped_peer_opens += 1
                log.warning(
                    "peer_breaker_not_applied",
                    replica=name,
                    opened_by=rec.node,
                    reason=f"ejection limit: {ejected} of {len(serving)} serving replicas of "
                    f"{state.spec.model} already out (max {self.max_ejection_percent:g}%)",
                )
                continue
            try:
                failure = FailureClass(rec.failure_class)
            except ValueError:
                failure = FailureClass.SERVER_ERROR
            door.peer_opened(name, failure, now + rec.open_s)

    def _apply_resets(self, door: RouterPort, view: ClusterView) -> None:
        if self._seen_resets is None:  # resets from before we started are about old breakers
            self._seen_resets = dict(view.resets)
            return
        for name, ts in view.resets.items():
            if self._seen_resets.get(name) != ts:
                self._seen_resets[name] = ts
                door.reset_breaker(name)

    def _local_breaker_opened(self, replica: str, failure_class: str, until_mono: float) -> None:
        open_s = until_mono - self._loop.time()
        view = self.store.view
        if open_s <= 0.0 or min(view.cluster_version, self.store.protocol) < 2:
            return  # an older member could not apply a duration: keep the breaker local
        self._spawn_write(
            {
                "op": "open_breaker",
                "replica": replica,
                "failure_class": failure_class,
                "open_s": round(open_s, 3),
                "node": self.node,
                "id": f"{self.node}-{uuid.uuid4().hex[:12]}",
            }
        )

    def _forward_event(self, event: Event) -> None:
        if event.kind in _LOCAL_ONLY_EVENTS or event.fields.get("replicated"):
            return
        self._spawn_write(
            {
                "op": "add_event",
                "kind": event.kind,
                "subject": event.subject,
                "message": f"{event.message} (seen by {self.node})",
                "fields": {**event.fields, "node": self.node},
            }
        )

    # -- reads for status and the control API --------------------------------------------------
    def leader_name(self) -> str | None:
        address = self.store.status().leader_address
        if address is None:
            return None
        for name, info in self.store.view.nodes.items():
            if info.raft == address:
                return name
        return None
