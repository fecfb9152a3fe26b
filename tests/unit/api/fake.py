"""An in-memory ControlBackend for API and hanodectl tests, plus a server running in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hanode.api.control import ControlError, ControlErrorCode
from hanode.api.server import start_api_server


def _replica(name: str, node: str, role: str = "active", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "node": node,
        "model": "llama-8b",
        "url": f"http://127.0.0.1:80{name[-1]}",
        "engine": "vllm",
        "role": role,
        "admin": "enabled",
        "health": "healthy",
        "health_level": 3,
        "weight": 1.0,
        "gpu_mem": 0.5,
        "kv_usage": None,
        "queue_depth": 0.0,
        "latency_ms": 420.0,
        "ttft_ms": None,
        "reason": "",
        "breaker": {"state": "closed"},
        "inflight": 2,
    }
    doc.update(extra)
    return doc


class FakeBackend:
    """Consistent enough to exercise every RPC; ``fail`` forces an error per method name."""

    node_name = "n1"

    def __init__(self) -> None:
        self.forced: list[bool] = []  # the force flag of each drain
        self.restart_gen: dict[str, int] = {}
        self.rollout_state = ""
        self.rollout_args: dict[str, Any] = {}
        self.replicas: dict[str, dict[str, Any]] = {
            "r1": _replica("r1", "n1"),
            "r2": _replica("r2", "n2", gpu_mem=0.89, latency_ms=1200.0, weight=0.25),
            "r3": _replica(
                "r3",
                "n2",
                role="standby",
                health="down",
                health_level=0,
                weight=0.0,
                gpu_mem=None,
                reason="connection refused",
                breaker={"state": "open", "open_until": 1.9e9, "last_failure_class": "connection"},
            ),
        }
        self.leader: str | None = "n1"
        self.member_list: list[dict[str, Any]] = [
            {
                "address": "10.0.0.1:9300",
                "node": "n1",
                "self": True,
                "leader": True,
                "connected": True,
            },
            {
                "address": "10.0.0.2:9300",
                "node": "n2",
                "self": False,
                "leader": False,
                "connected": True,
            },
        ]
        self.fail: dict[str, BaseException] = {}
        self.calls: list[tuple[str, Any]] = []
        self._events: list[dict[str, Any]] = []
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self.subscribed = 0
        self.add_event("health", "r3", "r3 is down: connection refused", level="down", n=3)

    # ------------------------------------------------------------- helpers

    def _check(self, method: str, arg: Any = None) -> None:
        self.calls.append((method, arg))
        err = self.fail.get(method)
        if err is not None:
            raise err

    def _get(self, replica: str) -> dict[str, Any]:
        try:
            return self.replicas[replica]
        except KeyError:
            raise ControlError(
                ControlErrorCode.NOT_FOUND, f"no replica named {replica!r}"
            ) from None

    def add_event(self, kind: str, subject: str, message: str, **fields: Any) -> dict[str, Any]:
        event = {
            "seq": len(self._events) + 1,
            "ts": time.time(),
            "kind": kind,
            "subject": subject,
            "message": message,
            "fields": fields,
        }
        self._events.append(event)
        for callback in list(self._subscribers):
            callback(event)
        return event

    # ------------------------------------------------------------- ControlBackend

    def status(self) -> dict[str, Any]:
        self._check("status")
        return {
            "node": self.node_name,
            "leader": self.leader,
            "nodes": [
                {
                    "name": "n1",
                    "raft_address": "10.0.0.1:9300",
                    "api_address": "10.0.0.1:9200",
                    "router_address": "10.0.0.1:8000",
                    "reachable": True,
                },
                {
                    "name": "n2",
                    "raft_address": "10.0.0.2:9300",
                    "api_address": "10.0.0.2:9200",
                    "router_address": "10.0.0.2:8000",
                },
            ],
            "version": 7,
            "models": {"llama-8b": {"replicas_serving": 2}},
            "replicas": [dict(r) for _, r in sorted(self.replicas.items())],
            "events": self._events[-20:],
            "freshness": {
                "has_quorum": True,
                "leader": self.leader,
                "last_applied_age_s": 0.25,
                "commit_index": 42,
            },
        }

    def _targets(self, replica: str | None, node: str | None) -> list[str]:
        if replica is not None:
            self._get(replica)
            return [replica]
        names = [n for n, r in sorted(self.replicas.items()) if r["node"] == node]
        if not any(r["node"] == node for r in self.replicas.values()) and node not in ("n1", "n2"):
            raise ControlError(ControlErrorCode.NOT_FOUND, f"no node named {node!r}")
        return names

    async def drain(
        self, replica: str | None = None, node: str | None = None, force: bool = False
    ) -> list[str]:
        self._check("drain", replica or node)
        self.forced.append(force)
        names = self._targets(replica, node)
        for name in names:
            self.replicas[name]["admin"] = "drained"
            self.add_event("admin", name, f"{name} drained")
        return names

    async def undrain(self, replica: str | None = None, node: str | None = None) -> list[str]:
        self._check("undrain", replica or node)
        names = self._targets(replica, node)
        for name in names:
            self.replicas[name]["admin"] = "enabled"
        return names

    async def promote(self, replica: str) -> None:
        self._check("promote", replica)
        self._get(replica)["role"] = "active"

    async def demote(self, replica: str) -> None:
        self._check("demote", replica)
        target = self._get(replica)
        active = [r for r in self.replicas.values() if r["role"] == "active"]
        if target["role"] == "active" and len(active) == 1:
            raise ControlError(
                ControlErrorCode.FAILED_PRECONDITION, f"{replica} is the last active replica"
            )
        target["role"] = "standby"

    # recovery
    async def restart(self, replica: str, force: bool = False) -> int:
        self._check("restart", (replica, force))
        target = self._get(replica)
        if target["role"] == "active" and not force:
            active = [r for r in self.replicas.values() if r["role"] == "active"]
            if len(active) == 1:
                raise ControlError(
                    ControlErrorCode.FAILED_PRECONDITION, f"{replica} is the last serving one"
                )
        self.restart_gen[replica] = self.restart_gen.get(replica, 0) + 1
        return self.restart_gen[replica]

    def slo(self) -> list[dict[str, Any]]:
        """A real SLO series: 1000 requests in the last hour, 20 failed, target 99.9 %."""
        from hanode.policies.burn_rate import SloSeries

        self._check("slo")
        now = 100_000 * 60.0
        series = SloSeries(0.999)
        for i in range(1000):
            series.record(now - 3000 + i * 3.0, i >= 20, 0.25)
        r = series.report("m", "interactive", now)
        return [
            {
                "model": r.model,
                "request_class": r.request_class,
                "target": r.target,
                "requests_1h": r.requests_1h,
                "success_rate_1h": r.success_rate_1h,
                "availability_1h": r.availability_1h,
                "p95_latency_s": r.p95_latency_s,
                "mttr_s": 4.5,
                "burn": dict(r.burn),
                "alerts": list(r.alerts),
            }
        ]

    async def sleep(self, replica: str, force: bool = False) -> None:
        self._check("sleep", (replica, force))
        self._get(replica)["process"] = {"observed": "sleeping", "desired": "sleep"}

    async def wake(self, replica: str) -> None:
        self._check("wake", replica)
        self._get(replica)["process"] = {"observed": "starting", "desired": "run"}

    # rolling reloads: one model "llama-8b", its rollout as cluster.rollout.rollout_doc shapes it
    def _rollout(self, state: str) -> dict[str, Any]:
        return {
            "id": "ro1",
            "model": "llama-8b",
            "state": state,
            "waiting": "waiting: draining r2 would leave 1 serving replicas, min_active is 2"
            if state == "running"
            else "",
            "reason": "aborted by operator via n1" if state == "aborted" else "",
            "by": "operator via n1",
            "surge_replica": "",
            "surge_state": "",
            "max_unavailable": self.rollout_args.get("max_unavailable", 1),
            "drain_timeout_s": self.rollout_args.get("drain_timeout_s") or 60.0,
            "started": 1_700_000_000.0,
            "finished": None if state == "running" else 1_700_000_012.5,
            "duration_s": None if state == "running" else 12.5,
            "serving": 2,
            "replicas": [
                {"name": "r1", "step": "draining", "reason": "", "inflight": 3,
                 "unavailable_s": None, "serving": False},
                {"name": "r2", "step": "waiting", "reason": "", "inflight": 0,
                 "unavailable_s": None, "serving": True},
            ],
        }  # fmt: skip

    async def reload(
        self,
        model: str,
        max_unavailable: int = 1,
        surge: bool = False,
        drain_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        self._check("reload", (model, max_unavailable, surge, drain_timeout_s))
        if model != "llama-8b":
            raise ControlError(ControlErrorCode.NOT_FOUND, f"unknown model '{model}'")
        self.rollout_args = {"max_unavailable": max_unavailable, "drain_timeout_s": drain_timeout_s}
        self.rollout_state = "running"
        return self._rollout("running")

    def reload_status(self, model: str | None = None) -> list[dict[str, Any]]:
        self._check("reload_status", model)
        if not self.rollout_state:
            return []
        return [self._rollout(self.rollout_state)]

    async def abort_reload(self, model: str) -> dict[str, Any]:
        self._check("abort_reload", model)
        if self.rollout_state != "running":
            raise ControlError(
                ControlErrorCode.FAILED_PRECONDITION, f"no rollout of {model} is running"
            )
        self.rollout_state = "aborted"
        return self._rollout("aborted")

    def incidents(self, limit: int = 50) -> list[dict[str, Any]]:
        self._check("incidents", limit)
        found = [
            {
                "id": "r3#1",
                "model": "m",
                "replica": "r3",
                "open": False,
                "detected": 1000.0,
                "restored": 1003.25,
                "closed": 1010.0,
                "mttr_s": 3.25,
                "duration_s": 10.0,
                "timeline": [
                    {"ts": 1000.0, "what": "detected", "message": "r3 DOWN"},
                    {"ts": 1000.0, "what": "action", "message": "woke standby r2"},
                    {"ts": 1003.25, "what": "standby_serving", "message": "r2 serving (1/1)"},
                    {"ts": 1010.0, "what": "original_back", "message": "r3 serves again"},
                ],
            },
            {
                "id": "r1#2",
                "model": "m",
                "replica": "r1",
                "open": True,
                "detected": 2000.0,
                "restored": None,
                "closed": None,
                "mttr_s": None,
                "duration_s": None,
                "timeline": [{"ts": 2000.0, "what": "detected", "message": "r1 DOWN"}],
            },
        ]
        return found[-limit:]

    def breakers(self) -> list[dict[str, Any]]:
        self._check("breakers")
        return [
            {
                "replica": "r3",
                "failure_class": "connection",
                "state": "open",
                "until": 1.9e9,
                "source": "cluster",
                "node": "n2",
            },
            {
                "replica": "r2",
                "failure_class": "timeout",
                "state": "half_open",
                "until": None,
                "source": "local",
                "node": "n1",
            },
        ]

    async def reset_breaker(self, replica: str) -> None:
        self._check("reset_breaker", replica)
        self._get(replica)["breaker"] = {"state": "closed"}

    def events(self, after_seq: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        self._check("events", after_seq)
        return [e for e in self._events if e["seq"] > after_seq][:limit]

    def subscribe_events(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        self.subscribed += 1

        def unsubscribe() -> None:
            self._subscribers.remove(callback)

        return unsubscribe

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def members(self) -> list[dict[str, Any]]:
        self._check("members")
        return [dict(m) for m in self.member_list]

    async def add_member(self, address: str) -> None:
        self._check("add_member", address)
        if all(m["address"] != address for m in self.member_list):
            self.member_list.append(
                {"address": address, "node": "", "self": False, "leader": False, "connected": False}
            )

    async def remove_member(self, address: str) -> None:
        self._check("remove_member", address)
        before = len(self.member_list)
        self.member_list = [m for m in self.member_list if m["address"] != address]
        if len(self.member_list) == before:
            raise ControlError(ControlErrorCode.NOT_FOUND, f"{address} is not a member")

    async def transfer_leader(self, target: str | None = None) -> str | None:
        self._check("transfer_leader", target)
        if target is None:
            self.leader = "n2"
            return "n2"
        if all(m["address"] != target for m in self.member_list):
            raise ControlError(ControlErrorCode.NOT_FOUND, f"{target} is not a member")
        return None


class ThreadedServer:
    """The real grpc.aio server on its own event loop in a thread (for synchronous clients)."""

    def __init__(self, backend: FakeBackend, tokens: tuple[str, ...] = ()) -> None:
        self.backend = backend
        self.tokens = tokens
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._server: Any = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        self._server, self.port = future.result(timeout=10)

    async def _start(self) -> tuple[Any, int]:
        return await start_api_server(self.backend, "127.0.0.1", 0, self.tokens)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the server's loop (as the real backend would emit events)."""
        asyncio.run_coroutine_threadsafe(self._call(fn), self.loop).result(timeout=5)

    @staticmethod
    async def _call(fn: Callable[[], Any]) -> None:
        fn()

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextmanager
def threaded_server(
    backend: FakeBackend | None = None, tokens: tuple[str, ...] = ()
) -> Iterator[ThreadedServer]:
    server = ThreadedServer(backend or FakeBackend(), tokens)
    server.start()
    try:
        yield server
    finally:
        server.stop()
