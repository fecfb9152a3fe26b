"""A small deterministic world for the recovery planner: replicas in a document, a leader
that plans (roles, process, incidents) and nodes that carry desired states out at once.

Everything goes through the real state machine; time is a number the test moves.
"""

from __future__ import annotations

import copy
from typing import Any

from hanode.cluster.document import Command, Doc, empty_doc, stamp
from hanode.cluster.incidents import plan_incidents
from hanode.cluster.planner import ModelPolicy, PlannerMemory, PlannerSettings, plan_roles
from hanode.cluster.process_plan import plan_process
from hanode.cluster.state import apply
from hanode.cluster.view import ClusterView, freeze
from hanode.policies.weights import WeightThresholds
from hanode.pool.lifecycle import Desired
from tests.unit.cluster.helpers import MODEL, spec

SETTINGS = PlannerSettings(WeightThresholds(), gpu_prepare=0.8, demote_hold_s=10.0)
TERM = {"term": 1, "leader": "n1"}


class World:
    def __init__(self, min_active: int = 1) -> None:
        self.doc: Doc = empty_doc()
        self.now = 100.0
        self.memory = PlannerMemory()
        self.policies = {MODEL: ModelPolicy(MODEL, min_active)}
        self.crashed: set[str] = set()
        self.decisions: list[Command] = []
        self.write({"op": "claim_leader", "node": "n1", "term": 1})

    def write(self, cmd: Command) -> Any:
        cmd = stamp(copy.deepcopy(cmd))
        cmd.setdefault("ts", self.now)
        return apply(self.doc, cmd)

    def add(self, name: str, role: str = "active", standby: str = "hot", actuated: bool = True):
        raw = {**spec(name, role=role), "actuated": actuated, "standby": standby}
        self.write({"op": "register_replica", "spec": raw})
        self.settle_node(name)

    @property
    def view(self) -> ClusterView:
        return freeze(self.doc, 1)

    def report(self, name: str, state: str, level: int) -> None:
        self.write({"op": "report_process", "replica": name, "node": "n1", "state": state})
        self.write({"op": "observe", "replica": name, "obs": {"level": level}})

    def settle_node(self, name: str) -> None:
        """The node carries the replica's desired state out (at once, in this world)."""
        rec = self.view.replicas[name]
        if name in self.crashed:
            self.report(name, "backoff", 0)
        elif rec.desired is Desired.RUN:
            self.report(name, "running", 3)
        elif rec.desired is Desired.SLEEP:
            self.report(name, "sleeping", 1)
        else:
            self.report(name, "stopped", 0)

    def crash(self, name: str) -> None:
        self.crashed.add(name)
        self.settle_node(name)

    def heal(self, name: str) -> None:
        self.crashed.discard(name)
        self.settle_node(name)

    def leader_round(self) -> list[Command]:
        view = self.view
        roles = plan_roles(view, self.policies, SETTINGS, self.memory, self.now)
        process = plan_process(view, self.policies, self.memory, self.now, SETTINGS.demote_hold_s)
        out = roles + process
        out += plan_incidents(view, out, self.memory.served)
        for cmd in out:
            self.write({**cmd, **TERM})
        self.decisions += out
        return out

    def round(self, dt: float = 1.0) -> list[Command]:
        out = self.leader_round()
        for name in sorted(self.view.replicas):
            self.settle_node(name)
        self.now += dt
        return out

    def serving(self) -> list[str]:
        view = self.view
        return sorted(
            n for n, r in view.replicas.items() if r.role.value == "active" and r.may_serve()
        )
