"""The node's reconciler against the fake store and a fake supervisor: desired states and
restart requests carried to the supervisor, its observations reported back, only enum values
and counters taken from the replicated state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hanode.cluster.document import Command, stamp
from hanode.cluster.reconcile import Reconciler
from hanode.cluster.state import apply
from hanode.pool.lifecycle import Desired, Observed
from tests.unit.cluster.fake_store import FakeStore
from tests.unit.cluster.helpers import spec


@dataclass
class Report:
    observed: Observed = Observed.UNKNOWN
    detail: str = ""


class FakeSupervisor:
    def __init__(self, *names: str) -> None:
        self.reports = {n: Report() for n in names}
        self.desired: dict[str, Desired] = {}
        self.restarts: list[str] = []
        self.listeners: list[Callable[[str, Any], None]] = []

    def names(self) -> tuple[str, ...]:
        return tuple(self.reports)

    def set_desired(self, name: str, desired: Desired) -> None:
        self.desired[name] = desired

    async def restart(self, name: str) -> None:
        self.restarts.append(name)
        self.set(name, Observed.STARTING, "restarted by an operator")

    def observed(self) -> dict[str, Report]:
        return dict(self.reports)

    def subscribe(self, listener: Callable[[str, Any], None]) -> None:
        self.listeners.append(listener)

    def set(self, name: str, observed: Observed, detail: str = "") -> None:
        self.reports[name] = Report(observed, detail)
        for listener in self.listeners:
            listener(name, self.reports[name])


def setup(protocol: int = 3) -> tuple[FakeStore, FakeSupervisor, Reconciler, list[Command]]:
    store = FakeStore()
    for node in ("n1", "n2"):
        apply(store.doc, {"op": "register_node", "name": node, "protocol": protocol, "ts": 1})
    raw = {**spec("a-0", node="n1"), "actuated": True, "standby": "sleep"}
    apply(store.doc, {"op": "register_replica", "spec": raw, "ts": 1.0})
    other = {**spec("b-0", node="n2"), "actuated": True}
    apply(store.doc, {"op": "register_replica", "spec": other, "ts": 1.0})
    store.publish()
    sup = FakeSupervisor("a-0", "b-0")  # b-0: a name this node does not run in the state
    sent: list[Command] = []

    def send(cmd: Command, failed: Callable[[], None]) -> None:
        sent.append(cmd)
        cmd = stamp(dict(cmd))
        cmd.setdefault("ts", 9.0)
        store.apply_now(cmd)

    rec = Reconciler("n1", sup, send, lambda view: view.cluster_version)
    store.subscribe(rec.on_view)
    rec.on_view(store.view)
    return store, sup, rec, sent


def test_desired_states_of_own_replicas_reach_the_supervisor() -> None:
    async def go() -> None:
        store, sup, _, _ = setup()
        assert sup.desired == {"a-0": Desired.RUN}  # b-0 is n2's: not ours to act on
        store.apply_now(
            stamp(
                {
                    "op": "set_desired",
                    "replica": "a-0",
                    "desired": "sleep",
                    "by": "operator",
                    "ts": 2.0,
                }
            )
        )
        assert sup.desired["a-0"] is Desired.SLEEP

    asyncio.run(go())


def test_observations_are_reported_on_change_and_when_the_state_differs() -> None:
    async def go() -> None:
        store, sup, _, sent = setup()
        assert sent == []  # the state already says "unknown": nothing to report
        sup.set("a-0", Observed.RUNNING)
        assert store.view.replicas["a-0"].process is Observed.RUNNING
        count = len(sent)
        store.publish()  # nothing changed: nothing written
        assert len(sent) == count
        # a state that says otherwise (a lost write, a resync) is corrected without a heartbeat
        store.doc["replicas"]["a-0"]["proc"]["state"] = "backoff"
        store.publish()
        assert store.view.replicas["a-0"].process is Observed.RUNNING

    asyncio.run(go())


def test_a_restart_request_runs_once_and_is_reported_done() -> None:
    async def go() -> None:
        store, sup, _, _ = setup()
        cmd = stamp({"op": "request_restart", "replica": "a-0", "gen": 1, "by": "x", "ts": 3.0})
        store.apply_now(cmd)
        store.apply_now(cmd)  # the same request again (a retried write)
        await asyncio.sleep(0)
        assert sup.restarts == ["a-0"]
        rec = store.view.replicas["a-0"]
        assert rec.restart_done == 1 and rec.process is Observed.STARTING
        # a new node process picks up where the state says it is: no restart replayed
        again = Reconciler("n1", sup, lambda c, f: None, lambda view: view.cluster_version)
        again.on_view(store.view)
        await asyncio.sleep(0)
        assert sup.restarts == ["a-0"]

    asyncio.run(go())


def test_before_every_member_speaks_protocol_3_nothing_is_written_or_restarted() -> None:
    async def go() -> None:
        _store, sup, _, sent = setup(protocol=2)
        assert sent == []
        sup.set("a-0", Observed.RUNNING)
        assert sent == []
        assert sup.desired == {"a-0": Desired.RUN}  # the role's default still applies

    asyncio.run(go())
