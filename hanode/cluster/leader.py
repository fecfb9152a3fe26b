"""The leader's loop (Patroni's ``ha.py``): claim the term, judge leases, plan, expire breakers.

Every node runs it; it acts only while its node leads with a quorum. Each round reads the
replicated view, asks the pure parts what to change (``leases``, ``planner``) and writes the
answers as fenced commands: they carry this leader's term and apply only while the cluster
follows that claim. Timers (demotion holds, breaker open periods) are on this node's monotonic
clock and restart with each new leader, which errs on the side of waiting a little longer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from hanode.cluster.document import RECOVERY_PROTOCOL, ROLLOUT_PROTOCOL, Command
from hanode.cluster.incidents import plan_incidents
from hanode.cluster.leases import plan_leases
from hanode.cluster.planner import (
    ModelPolicy,
    PlannerMemory,
    PlannerSettings,
    plan_roles,
    plan_weights,
)
from hanode.cluster.process_plan import plan_process
from hanode.cluster.rollout import RolloutMemory, RolloutSettings, plan_rollouts, rolling_models
from hanode.cluster.store import ClusterStore, ConsensusRejected, ConsensusTimeout
from hanode.cluster.view import ClusterView

log = structlog.get_logger("hanode.leader")

Write = Callable[[Command], Awaitable[Any]]
# Sends one warm-up prompt to a replica (its url, engine, model); True when it answered.
WarmUp = Callable[[str, str, str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class LeaderSettings:
    """From [cluster] (planner_interval_s, node_lease_s, checkpoint_s): no defaults here."""

    interval_s: float
    lease_s: float
    checkpoint_s: float  # how often the nodes compare state digests
    rollout: RolloutSettings | None = None  # rolling reloads ([rollout]); None: never started


class LeaderLoop:
    def __init__(
        self,
        node: str,
        store: ClusterStore,
        write: Write,
        policies: Mapping[str, ModelPolicy],
        planner: PlannerSettings,
        settings: LeaderSettings,
        clock: Callable[[], float] = time.monotonic,
        warm_up: WarmUp | None = None,
    ) -> None:
        self.node = node
        self._warm_up = warm_up
        self.rollouts = RolloutMemory()
        self._tasks: set[asyncio.Task[None]] = set()
        self.store = store
        self._write = write
        self.policies = policies
        self.planner = planner
        self.settings = settings
        self._clock = clock
        self.term = 0  # the term this node leads in; 0 while it does not
        self._since = 0.0
        self.memory = PlannerMemory()
        self._breaker_seen: dict[tuple[str, str], float] = {}
        self._checkpoint_at = 0.0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.interval_s)
            try:
                await self.step()
            except (ConsensusTimeout, ConsensusRejected) as exc:
                log.info("leader_write_failed", error=str(exc))
            except Exception:
                log.exception("leader_step_failed")

    def _fenced(self, view: ClusterView) -> bool:
        """Fencing, leases and clock-free breakers need every member on protocol 2."""
        return min(view.cluster_version, self.store.protocol) >= 2

    async def step(self) -> None:
        status = self.store.status()
        if not status.is_leader or not status.has_quorum:
            if self.term:
                log.warning("leadership_lost", node=self.node, term=self.term)
            self.term = 0
            return
        view = self.store.view
        fenced = self._fenced(view)
        if self.term != status.term:
            self.term = status.term
            self._since = self._clock()
            self.memory = PlannerMemory()  # hold timers start afresh with each leader
            self.rollouts = RolloutMemory()  # so do a rollout's drain, reload and ramp timers
            self._breaker_seen.clear()
            self._checkpoint_at = self._clock()
            log.info("leading", node=self.node, term=self.term)
            if not fenced:
                await self._write(
                    {
                        "op": "add_event",
                        "kind": "leader",
                        "subject": self.node,
                        "message": f"{self.node} is the leader",
                        "fields": {"term": self.term},
                    }
                )
        if fenced and (view.leader_node, view.leader_term) != (self.node, self.term):
            await self._write({"op": "claim_leader", "node": self.node, "term": self.term})
            return  # decide on the next round, from a view that holds the claim
        for command in self.decide(view, fenced):
            if str(command.get("op", "")).endswith("_rollout") or command.get("op") == (
                "rollout_step"
            ):
                log.info(
                    "rollout_decision",
                    op=command["op"],
                    replica=command.get("replica"),
                    step=command.get("step"),
                    reason=command.get("reason"),
                )
            if command.get("op") in ("set_role", "set_desired"):
                log.info(
                    "planner_decision",
                    replica=command["replica"],
                    role=command.get("role"),
                    desired=command.get("desired"),
                    reason=command["reason"],
                )
            await self._write(command)

    def decide(self, view: ClusterView, fenced: bool) -> list[Command]:
        """This round's leader decisions, fenced with the term when the cluster supports it."""
        now = self._clock()
        out: list[Command] = []
        if fenced and now - self._since >= self.settings.lease_s:
            silence = self.store.peer_silence()
            if silence is not None:
                out += plan_leases(view, silence, self.settings.lease_s, self.node)
        weights = plan_weights(view, self.planner)
        if weights is not None:
            out.append(weights)
        rolling = self._rolling(view, fenced)
        if rolling is not None:
            plan = plan_rollouts(view, self.policies, self.rollouts, now, rolling)
            out += plan.commands
            for rid, name in plan.warmups:
                self._start_warm_up(view, rid, name, rolling.warmup_prompts)
        hold = rolling_models(view) if rolling is not None else frozenset()
        roles = plan_roles(view, self.policies, self.planner, self.memory, now, hold)
        out += roles
        if fenced and min(view.cluster_version, self.store.protocol) >= RECOVERY_PROTOCOL:
            process = plan_process(
                view, self.policies, self.memory, now, self.planner.demote_hold_s
            )
            out += process
            out += plan_incidents(view, roles + process, self.memory.served)
        if fenced:
            expired = self._expired_breakers(view, now)
            if expired:
                out.append({"op": "expire_breakers", "ids": expired})
            if now - self._checkpoint_at >= self.settings.checkpoint_s:
                self._checkpoint_at = now
                out.append({"op": "checkpoint", "id": uuid.uuid4().hex[:16]})
            for command in out:
                command["term"] = self.term
                command["leader"] = self.node
        return out

    def _rolling(self, view: ClusterView, fenced: bool) -> RolloutSettings | None:
        """Rollout settings when the whole cluster speaks the rollout protocol."""
        if not fenced or self.settings.rollout is None:
            return None
        if min(view.cluster_version, self.store.protocol) < ROLLOUT_PROTOCOL:
            return None
        return self.settings.rollout

    def _start_warm_up(self, view: ClusterView, rid: str, name: str, prompts: int) -> None:
        """Warm-up prompts to a reloaded replica, off the round (the next round sees them
        done). The first requests after a load are the slow ones: better ours than a
        client's."""
        rec = view.replicas.get(name)
        key = (rid, name)
        if rec is None or key in self.rollouts.warming:
            return
        self.rollouts.warming.add(key)
        memory = self.rollouts

        async def go() -> None:
            try:
                ok = 0
                for _ in range(max(1, prompts) * 3):  # bounded: a few failures are allowed
                    if self._warm_up is None or await self._warm_up(
                        rec.spec.url, rec.spec.engine, rec.spec.model
                    ):
                        ok += 1
                    if ok >= prompts:
                        memory.warmed.add(key)
                        log.info("rollout_warmed_up", replica=name, prompts=ok)
                        return
                    await asyncio.sleep(0.2)
            finally:
                memory.warming.discard(key)

        task = asyncio.get_running_loop().create_task(go())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _expired_breakers(self, view: ClusterView, now: float) -> dict[str, str]:
        """Breaker records whose open period has passed since this leader first saw them."""
        current = {(name, rec.id) for name, rec in view.breakers.items()}
        for key in [k for k in self._breaker_seen if k not in current]:
            del self._breaker_seen[key]
        expired: dict[str, str] = {}
        for name, rec in view.breakers.items():
            first = self._breaker_seen.setdefault((name, rec.id), now)
            if now - first >= rec.open_s:
                expired[name] = rec.id
        return expired
