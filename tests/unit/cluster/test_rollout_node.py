"""The node's part in rolling reloads: in-flight reports on draining replicas (on change, and
again while the count changes without a new view) and engine reloads once per generation."""

from __future__ import annotations

import asyncio
from typing import Any

from hanode.cluster.document import Command
from hanode.cluster.rollout_node import RolloutNode
from hanode.cluster.view import ClusterView
from tests.unit.actuators.fakes import run_async
from tests.unit.cluster.test_rollout import MODEL, RolloutWorld


def draining_world() -> RolloutWorld:
    w = RolloutWorld(["a", "b"], min_active=1)
    w.start()
    step = {"op": "rollout_step", "model": MODEL, "id": "r1", "replica": "a", "step": "draining"}
    w.write({**step, "term": 1, "leader": "n1"})
    return w


class Sent:
    def __init__(self) -> None:
        self.commands: list[Command] = []

    def __call__(self, cmd: Command, on_failure: Any) -> None:
        self.commands.append(cmd)


@run_async
async def test_in_flight_counts_are_reported_until_the_replica_is_drained() -> None:
    w = draining_world()
    inflight = {"a": 2, "b": 5}
    sent = Sent()
    node = RolloutNode("n1", sent, lambda: inflight, lambda v: 4, poll_s=0.01)
    node.on_view(w.view)
    assert [(c["replica"], c["inflight"]) for c in sent.commands] == [("a", 2)]
    node.on_view(w.view)  # the same count on its way: not sent twice
    assert len(sent.commands) == 1
    inflight["a"] = 0  # the streams finished; no new view: the poll sees it
    for _ in range(100):
        if len(sent.commands) == 2:
            break
        await asyncio.sleep(0.01)
    assert sent.commands[-1]["inflight"] == 0
    w.write(dict(sent.commands[-1]))  # applied: the state has the 0, nothing more to send
    node.on_view(w.view)
    assert len(sent.commands) == 2
    assert w.view.rollouts[MODEL].step("a").inflight == {"n1": 0}  # type: ignore[union-attr]
    node.close()


@run_async
async def test_nothing_is_reported_on_an_older_protocol() -> None:
    w = draining_world()
    sent = Sent()
    node = RolloutNode("n1", sent, lambda: {"a": 1}, lambda v: 3)
    node.on_view(w.view)
    assert sent.commands == []


@run_async
async def test_an_engine_reload_runs_once_per_generation_and_is_reported() -> None:
    w = RolloutWorld(["a"], min_active=1)
    w.doc["replicas"]["a"]["spec"]["reload"] = "engine"
    w.doc["replicas"]["a"]["reload_gen"] = 1  # as rollout_step "reloading" (engine) writes it
    calls: list[str] = []

    async def reload() -> None:
        calls.append("a")

    sent = Sent()
    node = RolloutNode("n1", sent, dict, lambda v: 4, reloads={"a": reload})
    view: ClusterView = w.view
    node.on_view(view)
    node.on_view(view)  # the same generation again: no second call
    for _ in range(100):
        if sent.commands:
            break
        await asyncio.sleep(0.01)
    assert calls == ["a"]
    assert sent.commands == [{"op": "report_reload", "replica": "a", "node": "n1", "done": 1}]
    assert w.write(dict(sent.commands[0])) is True
    assert w.view.replicas["a"].reload_done == 1
    node.on_view(w.view)
    await asyncio.sleep(0.02)
    assert calls == ["a"]
