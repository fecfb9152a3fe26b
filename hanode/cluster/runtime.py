"""A node's part in the cluster: wires the store to the router, the agent and the planner.

- every applied state becomes the router's pool snapshot (fail static: a node cut off from the
  majority keeps routing on the last state it saw, plus its local breakers);
- a breaker opened by this node's router is replicated; breakers opened elsewhere are forced
  open locally; operator resets travel the same way;
- this node's health checkers report through the agent (hysteresis, heartbeat);
- the leader runs the planner (weights, promotions, demotions) and expires old breakers.
Every write is idempotent, so a timed-out write is simply retried later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import structlog

from hanode.cluster.agent import ObservationReporter, ReportHysteresis
from hanode.cluster.planner import (
    ModelPolicy,
    PlannerMemory,
    PlannerSettings,
    Redundancy,
    plan_roles,
    plan_weights,
)
from hanode.cluster.pool import ClusterPool
from hanode.cluster.state import ClusterView, Command, spec_doc
from hanode.cluster.store import ClusterStore, ConsensusRejected, ConsensusTimeout
from hanode.config import Config
from hanode.engines.base import FailureClass
from hanode.events import Event, EventLog
from hanode.policies.weights import WeightThresholds
from hanode.router.frontdoor import FrontDoor

log = structlog.get_logger("hanode.cluster")

_LOCAL_ONLY_EVENTS = {"health"}  # the state machine records these itself


class ClusterRuntime:
    def __init__(
        self,
        config: Config,
        store: ClusterStore,
        thresholds: WeightThresholds,
        events: EventLog,
    ) -> None:
        assert config.cluster is not None
        self.config = config
        self.node = config.node.name
        self.store = store
        self.pool = ClusterPool(thresholds)
        self.events = events
        self.reporter = ObservationReporter(
            self._send_observation, ReportHysteresis(heartbeat_s=config.cluster.heartbeat_s)
        )
        self.policies: Mapping[str, ModelPolicy] = {
            m.name: ModelPolicy(m.name, m.min_active, Redundancy(m.redundancy))
            for m in config.models
        }
        t = config.thresholds
        self.planner_settings = PlannerSettings(
            weights=thresholds,
            gpu_prepare=t.gpu_mem_prepare,
            demote_hold_s=config.cluster.demote_hold_s,
        )
        self.memory = PlannerMemory()
        self.door: FrontDoor | None = None
        self._loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Task[None]] = []
        self._seen_breakers: dict[str, float] = {}
        self._seen_resets: dict[str, float] = {}
        self._was_leader = False
        store.subscribe(self._on_view)
        events.subscribe(self._forward_event)

    # -- start and stop ------------------------------------------------------------------------
    def attach(self, door: FrontDoor) -> None:
        self.door = door
        door.on_breaker_open = self._local_breaker_opened
        self._on_view(self.store.view)

    def start(self, addresses: Mapping[str, str]) -> None:
        self._tasks.append(self._loop.create_task(self._register(addresses)))
        self._tasks.append(self._loop.create_task(self._leader_loop()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- writes --------------------------------------------------------------------------------
    async def _write(self, command: Command, timeout: float = 3.0) -> Any:
        command.setdefault("ts", time.time())
        return await self.store.submit(command, timeout)

    def _spawn_write(self, command: Command, on_failure: Any = None) -> None:
        async def go() -> None:
            try:
                await self._write(command)
            except (ConsensusTimeout, ConsensusRejected) as exc:
                log.info("cluster_write_failed", op=command.get("op"), error=str(exc))
                if on_failure is not None:
                    on_failure()

        self._loop.create_task(go())

    def _send_observation(self, command: Command) -> None:
        replica = str(command["replica"])
        self._spawn_write(command, on_failure=lambda: self.reporter.forget(replica))

    async def _register(self, addresses: Mapping[str, str]) -> None:
        """Announce this node and its replicas; retried until the cluster has taken them."""
        commands: list[Command] = [{"op": "register_node", "name": self.node, **addresses}]
        commands += [
            {"op": "register_replica", "spec": spec_doc(spec)} for spec in self.config.replicas
        ]
        delay = 0.2
        for command in commands:
            while True:
                try:
                    await self._write(dict(command), timeout=5.0)
                    break
                except (ConsensusTimeout, ConsensusRejected) as exc:
                    log.info("cluster_register_retry", op=command["op"], error=str(exc))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        for spec in self.config.replicas:
            self.reporter.forget(spec.name)  # report current health right away
        log.info("cluster_registered", node=self.node, replicas=len(self.config.replicas))

    # -- applied states ------------------------------------------------------------------------
    def _on_view(self, view: ClusterView) -> None:
        self.pool.update(view)
        door = self.door
        if door is None:
            return
        now = self._loop.time()
        wall = time.time()
        for name, rec in view.breakers.items():
            if rec.node == self.node or self._seen_breakers.get(name) == rec.until:
                continue
            self._seen_breakers[name] = rec.until
            try:
                failure = FailureClass(rec.failure_class)
            except ValueError:
                failure = FailureClass.SERVER_ERROR
            transitions = door.table.breaker(name).force_open(now, failure, now + rec.until - wall)
            door.breaker_changed(name, transitions, local=False)
        for name, ts in view.resets.items():
            if self._seen_resets.get(name, 0.0) < ts:
                first = name not in self._seen_resets
                self._seen_resets[name] = ts
                if not first or wall - ts < 60:
                    door.breaker_changed(name, door.table.breaker(name).reset(now), local=False)

    def _local_breaker_opened(self, replica: str, failure_class: str, until_mono: float) -> None:
        until = time.time() + (until_mono - self._loop.time())
        self._spawn_write(
            {
                "op": "open_breaker",
                "replica": replica,
                "failure_class": failure_class,
                "until": until,
                "node": self.node,
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

    # -- the leader's loop ---------------------------------------------------------------------
    async def _leader_loop(self) -> None:
        assert self.config.cluster is not None
        interval = self.config.cluster.planner_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self._plan_once()
            except (ConsensusTimeout, ConsensusRejected) as exc:
                log.info("planner_write_failed", error=str(exc))
            except Exception:
                log.exception("planner_failed")

    async def _plan_once(self) -> None:
        status = self.store.status()
        if not status.is_leader or not status.has_quorum:
            if self._was_leader:
                log.warning("leadership_lost", node=self.node)
            self._was_leader = False
            return
        if not self._was_leader:
            self._was_leader = True
            self.memory = PlannerMemory()  # a new leader starts its hold timers afresh
            await self._write(
                {
                    "op": "add_event",
                    "kind": "leader",
                    "subject": self.node,
                    "message": f"{self.node} is the leader",
                    "fields": {},
                }
            )
        view = self.store.view
        weights = plan_weights(view, self.planner_settings)
        if weights is not None:
            await self._write(weights)
        for command in plan_roles(
            view, self.policies, self.planner_settings, self.memory, time.time()
        ):
            log.info(
                "planner_decision",
                replica=command["replica"],
                role=command["role"],
                reason=command["reason"],
            )
            await self._write(command)
        wall = time.time()
        if any(b.until <= wall for b in view.breakers.values()):
            await self._write({"op": "expire_breakers"})

    # -- reads for status and the control API --------------------------------------------------
    def leader_name(self) -> str | None:
        address = self.store.status().leader_address
        if address is None:
            return None
        for name, info in self.store.view.nodes.items():
            if info.get("raft") == address:
                return name
        return None
