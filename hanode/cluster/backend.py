"""The control backend of a cluster node (served over gRPC to hanodectl).

Reads answer from this node's replicated state and say how fresh it is; writes become
idempotent commands that consensus carries to the leader from whichever node received them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hanode.addresses import split_hostport
from hanode.api.control import ControlError, ControlErrorCode
from hanode.cluster.document import RECOVERY_PROTOCOL, ROLLOUT_PROTOCOL
from hanode.cluster.rollout import plan_order, rollout_doc
from hanode.cluster.runtime import CONSENSUS_STALL_S, ClusterRuntime
from hanode.cluster.store import ConsensusRejected, ConsensusTimeout
from hanode.cluster.view import IncidentRecord
from hanode.pool.lifecycle import Desired
from hanode.pool.replica import AdminState, Role
from hanode.router.core import RouterCore
from hanode.status import status_document

T = TypeVar("T")
# Passes a leader transfer to the leader's control API: (api address, token, target).
Forward = Callable[[str, str, str | None], Awaitable[str | None]]


class ClusterControl:
    def __init__(
        self,
        runtime: ClusterRuntime,
        door: RouterCore,
        api_token: str = "",
        forward: Forward | None = None,
    ) -> None:
        self.runtime = runtime
        self.door = door
        self.api_token = api_token  # to forward requests that only the leader can serve
        self.forward = forward
        self.node_name = runtime.node
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._last_seq = 0
        runtime.store.subscribe(self._on_view)

    # -- helpers -------------------------------------------------------------------------------
    async def _write(self, command: dict[str, Any], timeout: float = 5.0) -> Any:
        try:
            return await self.runtime.write(command, timeout)
        except ConsensusTimeout as exc:
            raise ControlError(ControlErrorCode.UNKNOWN_OUTCOME, str(exc)) from None
        except ConsensusRejected as exc:
            message = str(exc)
            code = (
                ControlErrorCode.NOT_FOUND
                if message.startswith("unknown replica")
                else ControlErrorCode.UNAVAILABLE
            )
            raise ControlError(code, message) from None

    def _replica(self, name: str) -> Any:
        rec = self.runtime.store.view.replicas.get(name)
        if rec is None:
            known = ", ".join(sorted(self.runtime.store.view.replicas)) or "none"
            raise ControlError(
                ControlErrorCode.NOT_FOUND, f"unknown replica '{name}' (known: {known})"
            )
        return rec

    def _targets(self, replica: str | None, node: str | None) -> list[str]:
        view = self.runtime.store.view
        if (replica is None) == (node is None):
            raise ControlError(ControlErrorCode.INVALID, "name exactly one replica or one node")
        if replica is not None:
            self._replica(replica)
            return [replica]
        if node not in view.nodes:
            known = ", ".join(sorted(view.nodes)) or "none"
            raise ControlError(
                ControlErrorCode.NOT_FOUND, f"unknown node '{node}' (known: {known})"
            )
        return sorted(n for n, r in view.replicas.items() if r.spec.node == node)

    def _quorum_or_fail(self) -> None:
        if not self.runtime.store.status().has_quorum:
            raise ControlError(
                ControlErrorCode.UNAVAILABLE,
                f"node {self.node_name} is not in contact with a majority of the cluster",
            )

    # -- reads ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        store = self.runtime.store
        st = store.status()
        view = store.view
        nodes = []
        connected = set(st.connected) | {st.self_address}
        for name, info in sorted(view.nodes.items()):
            nodes.append(
                {
                    "name": name,
                    "raft_address": info.raft,
                    "api_address": info.api,
                    "router_address": info.router,
                    "reachable": info.raft in connected,
                    "lost": info.lost,
                    "protocol": info.protocol,
                }
            )
        leader = self.runtime.leader_name()
        freshness = {
            "has_quorum": st.has_quorum,
            "leader": leader,
            "last_applied_age_s": round(time.monotonic() - st.last_applied_at, 3),
            "commit_index": st.commit_index,
        }
        doc = status_document(
            self.node_name,
            self.runtime.pool.snapshot,
            self.door.registry.breakers(),
            self.door.inflight,
            self.events(0, 20),
            self.door.loop.time(),
            leader=leader,
            nodes=nodes,
            freshness=freshness,
        )
        doc["consensus"] = self.consensus()
        for replica in doc.get("replicas", []):
            rec = view.replicas.get(str(replica.get("name", "")))
            if rec is not None and rec.actuated:  # its own node adds the supervisor's detail
                replica["process"] = {
                    "observed": rec.process.value,
                    "desired": rec.desired.value,
                    "detail": rec.process_detail,
                }
        return doc

    def consensus(self) -> dict[str, Any]:
        """Whether this node's consensus works and which versions and term it is on."""
        store = self.runtime.store
        st = store.status()
        view = store.view
        problem = self.runtime.consensus_failure or store.consensus_problem(CONSENSUS_STALL_S)
        return {
            "healthy": problem is None and view.halted is None,
            "problem": problem,
            "thread_alive": problem is None or "died" not in problem,
            "halted": view.halted,
            "term": st.term,
            "leader_term": view.leader_term,
            "leader_node": view.leader_node or None,
            "protocol": store.protocol,
            "cluster_version": view.cluster_version,
            "state_digest": view.digest,
            "applied_index": view.index,
            "lost_nodes": sorted(view.lost_nodes),
        }

    def breakers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        now = self.door.loop.time()
        wall = time.time()
        for name, rec in sorted(self.runtime.store.view.breakers.items()):
            # Replicated as a duration; shown with this router's own breaker deadline.
            local = self.door.breaker(name).snapshot(now)
            until = local.get("open_until")
            out.append(
                {
                    "replica": name,
                    "failure_class": rec.failure_class,
                    "state": "open" if isinstance(until, float) else "expired",
                    "until": wall + (until - now) if isinstance(until, float) else None,
                    "source": "cluster",
                    "node": rec.node,
                }
            )
        for name, breaker in sorted(self.door.registry.breakers().items()):
            snap = breaker.snapshot(now)
            if snap["state"] == "closed":
                continue
            until = snap.get("open_until")
            out.append(
                {
                    "replica": name,
                    "failure_class": snap.get("last_failure_class") or "",
                    "state": snap["state"],
                    "until": wall + (until - now) if isinstance(until, float) else None,
                    "source": "local",
                    "node": self.node_name,
                }
            )
        return out

    def events(self, after_seq: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        items = [dict(e) for e in self.runtime.store.view.events if int(e["seq"]) > after_seq]
        for item in items:
            item["fields"] = dict(item.get("fields", {}))
        return items[-limit:] if limit else items

    def subscribe_events(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _on_view(self, view: Any) -> None:
        if not self._subscribers:
            self._last_seq = max((int(e["seq"]) for e in view.events), default=self._last_seq)
            return
        new = self.events(self._last_seq, 0)
        for event in new:
            self._last_seq = max(self._last_seq, int(event["seq"]))
            for callback in list(self._subscribers):
                callback(event)

    def members(self) -> list[dict[str, Any]]:
        st = self.runtime.store.status()
        names = {info.raft: name for name, info in self.runtime.store.view.nodes.items()}
        connected = set(st.connected)
        return [
            {
                "address": address,
                "node": names.get(address, ""),
                "self": address == st.self_address,
                "leader": address == st.leader_address,
                "connected": address == st.self_address or address in connected,
            }
            for address in st.members
        ]

    # -- writes --------------------------------------------------------------------------------
    async def _set_admin(
        self, admin: AdminState, replica: str | None, node: str | None
    ) -> list[str]:
        targets = self._targets(replica, node)
        if not targets:
            return []
        self._quorum_or_fail()
        await self._write(
            {"op": "set_admin", "replicas": targets, "admin": admin.value, "by": self.node_name}
        )
        return targets

    async def drain(
        self, replica: str | None = None, node: str | None = None, force: bool = False
    ) -> list[str]:
        if not force:
            targets = set(self._targets(replica, node))
            for model in sorted({self._replica(n).spec.model for n in targets}):
                if self._last_serving(model, targets):
                    raise ControlError(
                        ControlErrorCode.FAILED_PRECONDITION,
                        f"draining {', '.join(sorted(targets))} would leave {model} with no "
                        "serving replica; undrain or promote another one first "
                        "(or drain --force to take the model down)",
                    )
        return await self._set_admin(AdminState.DRAINED, replica, node)

    def _last_serving(self, model: str, leaving: set[str]) -> bool:
        """Do ``leaving`` hold every replica of ``model`` that may serve now (and one does)?
        The check drain and demote share: an operator action must not take a model down
        by accident."""
        view = self.runtime.store.view
        serving = {
            n
            for n, r in view.replicas.items()
            if r.spec.model == model and r.may_serve(view.lost_nodes)
        }
        return bool(serving) and serving <= leaving

    async def undrain(self, replica: str | None = None, node: str | None = None) -> list[str]:
        return await self._set_admin(AdminState.ENABLED, replica, node)

    async def _set_role(self, replica: str, role: Role) -> None:
        rec = self._replica(replica)
        if role is Role.STANDBY and rec.role is Role.ACTIVE:
            view = self.runtime.store.view
            others = [
                r
                for n, r in view.replicas.items()
                if n != replica and r.spec.model == rec.spec.model and r.may_serve(view.lost_nodes)
            ]
            if not others:  # unlike drain, also when the replica itself cannot serve now
                raise ControlError(
                    ControlErrorCode.FAILED_PRECONDITION,
                    f"'{replica}' is the last serving active replica of {rec.spec.model}; "
                    "promote another one first",
                )
        self._quorum_or_fail()
        await self._write(
            {
                "op": "set_role",
                "replica": replica,
                "role": role.value,
                "reason": f"operator via {self.node_name}",
                "by": "operator",
            }
        )

    async def promote(self, replica: str) -> None:
        await self._set_role(replica, Role.ACTIVE)

    async def demote(self, replica: str) -> None:
        await self._set_role(replica, Role.STANDBY)

    async def reset_breaker(self, replica: str) -> None:
        self._replica(replica)
        self._quorum_or_fail()
        await self._write({"op": "reset_breaker", "replica": replica, "by": self.node_name})

    # -- recovery ------------------------------------------------------------------------------
    def incidents(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` incidents (0: all the state holds), oldest first."""
        items = [incident_doc(i) for i in self.runtime.store.view.incidents]
        return items[-limit:] if limit else items

    def slo(self) -> list[dict[str, Any]]:
        """This router's SLO series, with each model's mean MTTR from the incidents."""
        mttr: dict[str, list[float]] = {}
        for inc in self.runtime.store.view.incidents:
            if inc.mttr_s is not None:
                mttr.setdefault(inc.model, []).append(inc.mttr_s)
        out = []
        for r in self.door.admission.slo_reports():
            values = mttr.get(r.model)
            out.append(
                {
                    "model": r.model,
                    "request_class": r.request_class,
                    "target": r.target,
                    "requests_1h": r.requests_1h,
                    "success_rate_1h": r.success_rate_1h,
                    "availability_1h": r.availability_1h,
                    "p95_latency_s": r.p95_latency_s,
                    "mttr_s": sum(values) / len(values) if values else None,
                    "burn": dict(r.burn),
                    "alerts": list(r.alerts),
                }
            )
        return out

    def _actuated(self, name: str) -> Any:
        rec = self._replica(name)
        view = self.runtime.store.view
        if min(view.cluster_version, self.runtime.store.protocol) < RECOVERY_PROTOCOL:
            raise ControlError(
                ControlErrorCode.FAILED_PRECONDITION,
                f"the cluster runs protocol {view.cluster_version}; restart, sleep and wake "
                f"need every member on protocol {RECOVERY_PROTOCOL}",
            )
        if not rec.actuated:
            raise ControlError(
                ControlErrorCode.FAILED_PRECONDITION,
                f'\'{name}\' has no actuator (set actuator = "command" or "systemd" in its '
                "[[replicas]] entry on its node); hanode only routes to it",
            )
        return rec

    def _not_last(self, name: str, verb: str, force: bool) -> None:
        rec = self._replica(name)
        if not force and self._last_serving(rec.spec.model, {name}):
            raise ControlError(
                ControlErrorCode.FAILED_PRECONDITION,
                f"{verb} {name} would leave {rec.spec.model} with no serving replica; wake or "
                f"promote another one first (or {verb} --force)",
            )

    async def restart(self, replica: str, force: bool = False) -> int:
        """Ask the replica's node to restart it (clears a crash loop). While a request is not
        carried out yet, repeating it asks for the same restart (idempotent)."""
        rec = self._actuated(replica)
        self._not_last(replica, "restarting", force)
        self._quorum_or_fail()
        pending = rec.restart_gen > rec.restart_done
        gen = rec.restart_gen if pending else rec.restart_gen + 1
        command = {"op": "request_restart", "replica": replica, "gen": gen, "by": self.node_name}
        return int(await self._write(command))

    async def _set_desired(self, replica: str, desired: Desired) -> None:
        self._quorum_or_fail()
        await self._write(
            {
                "op": "set_desired",
                "replica": replica,
                "desired": desired.value,
                "by": "operator",
                "reason": f"via {self.node_name}",
            }
        )

    async def sleep(self, replica: str, force: bool = False) -> None:
        """Put the replica's engine to sleep (expected-down: no incident, no breaker)."""
        self._actuated(replica)
        self._not_last(replica, "sleeping", force)
        await self._set_desired(replica, Desired.SLEEP)

    async def wake(self, replica: str) -> None:
        """Wake (or start) the replica; it serves once L2 passes, ramping up its weight."""
        self._actuated(replica)
        await self._set_desired(replica, Desired.RUN)

    # -- rolling reloads -------------------------------------------------------------------------
    def _rollout_gate(self) -> None:
        view = self.runtime.store.view
        if min(view.cluster_version, self.runtime.store.protocol) < ROLLOUT_PROTOCOL:
            raise ControlError(
                ControlErrorCode.FAILED_PRECONDITION,
                f"the cluster runs protocol {view.cluster_version}; reload needs every member "
                f"on protocol {ROLLOUT_PROTOCOL}",
            )

    async def reload(
        self,
        model: str,
        max_unavailable: int = 1,
        surge: bool = False,
        drain_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Start a rolling reload of ``model`` (the leader carries it out); returns it.
        Repeating the call while it runs returns the same rollout (idempotent)."""
        self._rollout_gate()
        view = self.runtime.store.view
        current = view.rollouts.get(model)
        if current is not None and current.running:
            return rollout_doc(current, view)
        if max_unavailable < 1:
            raise ControlError(ControlErrorCode.INVALID, "--max-unavailable must be at least 1")
        cluster = self.runtime.config.cluster
        drain = (
            drain_timeout_s
            if drain_timeout_s is not None
            else (cluster.rollout_drain_timeout_s if cluster is not None else 60.0)
        )
        if not 0.0 <= drain <= 86400.0:
            raise ControlError(ControlErrorCode.INVALID, "--drain-timeout must be 0 to 86400 s")
        order, surge_replica, problem = plan_order(view, model, surge)
        if problem:
            code = (
                ControlErrorCode.NOT_FOUND
                if problem.startswith("unknown model")
                else ControlErrorCode.FAILED_PRECONDITION
            )
            raise ControlError(code, problem)
        self._quorum_or_fail()
        rid = uuid.uuid4().hex[:8]
        await self._write(
            {
                "op": "start_rollout",
                "model": model,
                "id": rid,
                "replicas": order,
                "surge_replica": surge_replica,
                "surge": surge,
                "max_unavailable": max_unavailable,
                "drain_timeout_s": drain,
                "by": f"operator via {self.node_name}",
            }
        )
        started = self.runtime.store.view.rollouts.get(model)
        if started is None:
            raise ControlError(ControlErrorCode.UNAVAILABLE, "the rollout did not apply here yet")
        return rollout_doc(started, self.runtime.store.view)

    def reload_status(self, model: str | None = None) -> list[dict[str, Any]]:
        view = self.runtime.store.view
        if model is not None and model not in view.rollouts:
            if not any(r.spec.model == model for r in view.replicas.values()):
                raise ControlError(ControlErrorCode.NOT_FOUND, f"unknown model '{model}'")
            return []
        return [
            rollout_doc(ro, view)
            for m, ro in sorted(view.rollouts.items())
            if model is None or m == model
        ]

    async def abort_reload(self, model: str) -> dict[str, Any]:
        self._rollout_gate()
        view = self.runtime.store.view
        ro = view.rollouts.get(model)
        if ro is None or not ro.running:
            raise ControlError(
                ControlErrorCode.FAILED_PRECONDITION, f"no rollout of {model} is running"
            )
        self._quorum_or_fail()
        await self._write(
            {
                "op": "abort_rollout",
                "model": model,
                "id": ro.id,
                "by": f"operator via {self.node_name}",
            }
        )
        return rollout_doc(self.runtime.store.view.rollouts[model], self.runtime.store.view)

    async def _membership(self, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except ConsensusTimeout as exc:
            raise ControlError(ControlErrorCode.UNKNOWN_OUTCOME, str(exc)) from None
        except ConsensusRejected as exc:
            raise ControlError(ControlErrorCode.FAILED_PRECONDITION, str(exc)) from None

    async def add_member(self, address: str) -> None:
        self._check_address(address)
        if address in self.runtime.store.status().members:
            return  # idempotent
        self._quorum_or_fail()
        await self._membership(lambda: self.runtime.store.add_member(address))

    async def remove_member(self, address: str) -> None:
        self._check_address(address)
        st = self.runtime.store.status()
        if address not in st.members:
            raise ControlError(ControlErrorCode.NOT_FOUND, f"{address} is not a member")
        if address == st.self_address:
            raise ControlError(
                ControlErrorCode.FAILED_PRECONDITION,
                "a node cannot remove itself; ask another member",
            )
        self._quorum_or_fail()
        if address == st.leader_address:
            # pysyncobj's leader refuses to remove itself (request_denied): hand over first.
            await self.transfer_leader(None)
        for attempt in range(10):  # bounded: a new leader denies until its first entry commits
            try:
                await self.runtime.store.remove_member(address)
                break
            except ConsensusRejected as exc:
                if attempt == 9 or address != st.leader_address:
                    raise ControlError(ControlErrorCode.FAILED_PRECONDITION, str(exc)) from None
                await asyncio.sleep(0.3)
            except ConsensusTimeout as exc:
                raise ControlError(ControlErrorCode.UNKNOWN_OUTCOME, str(exc)) from None
        for name, info in self.runtime.store.view.nodes.items():
            if info.raft == address:
                await self._write({"op": "forget_node", "name": name})

    async def transfer_leader(self, target: str | None = None) -> str | None:
        st = self.runtime.store.status()
        if target is not None:
            self._check_address(target)
            if target not in st.members:
                raise ControlError(ControlErrorCode.NOT_FOUND, f"{target} is not a member")
        if target is not None and target == st.leader_address:
            return self.runtime.leader_name()  # already there: idempotent
        if not st.is_leader:
            return await self._forward_transfer(target)
        await self._membership(lambda: self.runtime.store.transfer_leadership(target))
        for _ in range(50):  # bounded: up to ~5 s for the new leader to show
            await asyncio.sleep(0.1)
            if not self.runtime.store.status().is_leader and self.runtime.leader_name():
                return self.runtime.leader_name()
        return self.runtime.leader_name()

    async def _forward_transfer(self, target: str | None) -> str | None:
        """Only the leader can hand over: pass the request to its control API."""
        leader = self.runtime.leader_name()
        record = self.runtime.store.view.nodes.get(leader or "")
        api = record.api if record is not None else ""
        if not leader or not api or self.forward is None:
            raise ControlError(ControlErrorCode.UNAVAILABLE, "no leader with a control API known")
        return await self.forward(api, self.api_token, target)

    @staticmethod
    def _check_address(address: str) -> None:
        try:
            split_hostport(address)
        except ValueError as exc:
            raise ControlError(ControlErrorCode.INVALID, f"expected HOST:PORT: {exc}") from None


def incident_doc(inc: IncidentRecord) -> dict[str, Any]:
    """One incident as the control API's dicts (and ``hanodectl incidents --json``)."""
    return {
        "id": inc.id,
        "model": inc.model,
        "replica": inc.replica,
        "open": inc.open,
        "detected": inc.detected,
        "restored": inc.restored,
        "closed": inc.closed,
        "mttr_s": inc.mttr_s,
        "duration_s": inc.duration_s,
        "timeline": [{"ts": s.ts, "what": s.what, "message": s.message} for s in inc.timeline],
    }
