"""Replicated documents of a given size for :mod:`bench.scale`, and the commands applied to them.

Pure: no clock, no I/O. A fleet is ``hosts`` nodes of ``per_host`` replicas each, spread over
``models`` models (replica ``i`` serves model ``i % models``, so each model's replicas sit on
different hosts where there are hosts enough, as a redundancy policy wants); in each model
every fourth replica is a standby. The document is built the way a cluster builds it, through
:func:`hanode.cluster.state.apply`: each node registers, then its replicas, a leader claims its
term, every replica reports a first observation, and the planner's weights are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hanode.cluster.document import MAX_EVENTS, Command, Doc, empty_doc, stamp
from hanode.cluster.planner import PlannerSettings, plan_weights
from hanode.cluster.state import apply
from hanode.cluster.view import freeze
from hanode.policies.weights import WeightThresholds

LEADER = "h0"
TERM = 7
T0 = 1_800_000_000.0  # display timestamps (commands carry the writer's wall clock for events)
THRESHOLDS = WeightThresholds()  # the [thresholds] defaults
PLANNER = PlannerSettings(weights=THRESHOLDS, gpu_prepare=0.80, demote_hold_s=30.0)


@dataclass(frozen=True, slots=True)
class Fleet:
    replicas: int
    per_host: int = 8
    models: int = 2

    def __post_init__(self) -> None:
        if self.replicas < 1 or self.per_host < 1 or self.models < 1:
            raise ValueError("a fleet needs at least one replica, host and model")
        if self.replicas % self.per_host:
            raise ValueError(f"{self.replicas} replicas do not fill hosts of {self.per_host}")

    @property
    def hosts(self) -> int:
        return self.replicas // self.per_host

    def host(self, i: int) -> str:
        return f"h{i}"

    def replica(self, i: int) -> str:
        return f"h{i // self.per_host}g{i % self.per_host}"

    def model(self, i: int) -> str:
        return f"model-{i % self.models}"

    def role(self, i: int) -> str:
        return "standby" if (i // self.models) % 4 == 3 else "active"

    @property
    def names(self) -> list[str]:
        return [self.replica(i) for i in range(self.replicas)]


def default_fleet(replicas: int) -> Fleet:
    """8 replicas a host (an 8-GPU host), one model per 8 replicas, at least two models."""
    per_host = min(8, replicas)
    return Fleet(replicas, per_host, max(2, replicas // 8))


def healthy_obs(i: int, kv: float = 0.3) -> dict[str, Any]:
    """A healthy engine's observation (what ``observation_doc`` writes for one)."""
    return {
        "level": 3,  # HEALTHY
        "reason": "",
        "gpu_mem_frac": 0.6 + (i % 10) / 100,
        "kv_usage": kv,
        "queue_depth": 1,
        "running": 12,
        "latency_ms": 180.0,
        "ttft_ms": 95.0,
        "tpot_ms": 7.5,
    }


def build_commands(fleet: Fleet) -> list[Command]:
    """Every command that brings an empty document to the fleet, in order."""
    out: list[Command] = []
    ts = T0
    for h in range(fleet.hosts):
        name = fleet.host(h)
        out.append(
            {
                "op": "register_node",
                "name": name,
                "raft": f"10.0.{h // 250}.{h % 250 + 1}:7400",
                "api": f"10.0.{h // 250}.{h % 250 + 1}:7401",
                "router": f"10.0.{h // 250}.{h % 250 + 1}:8000",
                "ops": f"10.0.{h // 250}.{h % 250 + 1}:9100",
                "protocol": 5,
                "ts": ts,
            }
        )
    for i in range(fleet.replicas):
        h = i // fleet.per_host
        spec = {
            "name": fleet.replica(i),
            "model": fleet.model(i),
            "url": f"http://10.0.{h // 250}.{h % 250 + 1}:{8100 + i % fleet.per_host}",
            "engine": "vllm",
            "role": fleet.role(i),
            "gpu": i % fleet.per_host,
            "node": fleet.host(h),
            "actuated": True,
            "standby": "sleep",
        }
        out.append({"op": "register_replica", "spec": spec, "ts": ts})
    out.append({"op": "claim_leader", "node": LEADER, "term": TERM, "ts": ts})
    for i in range(fleet.replicas):
        out.append({"op": "observe", "replica": fleet.replica(i), "obs": healthy_obs(i), "ts": ts})
    weights = {fleet.replica(i): 1.0 for i in range(fleet.replicas) if fleet.role(i) == "active"}
    out.append(leader_cmd({"op": "set_weights", "weights": weights, "ts": ts}))
    return [stamp(c) for c in out]


def leader_cmd(cmd: Command) -> Command:
    """A leader decision, fenced with the term the fleet's leader claimed."""
    cmd["term"] = TERM
    cmd["leader"] = LEADER
    return cmd


def build_doc(fleet: Fleet) -> Doc:
    """The fleet's document in a steady state: the leader's weights are the planner's own, so
    its next round changes nothing, and the event log is full (``MAX_EVENTS``), as it is in a
    cluster that has run a while (the log is part of every copy and digest of the state)."""
    doc = empty_doc()
    for cmd in build_commands(fleet):
        apply(doc, cmd)
    weights = plan_weights(freeze(doc, 0), PLANNER)
    if weights is not None:
        apply(doc, stamp(leader_cmd({**weights, "ts": T0})))
    k = 0
    while len(doc["events"]) < MAX_EVENTS:
        name = fleet.replica(k % fleet.replicas)
        event = {
            "op": "add_event",
            "kind": "breaker",
            "subject": name,
            "message": f"closed -> open (gpu_oom) (seen by {fleet.host(0)})",
            "fields": {"node": fleet.host(0), "replicated": True},
            "ts": T0,
        }
        apply(doc, stamp(event))
        k += 1
    return doc


# -- the commands measured: what a running cluster writes most ----------------------------------
KINDS = (
    "observe (heartbeat)",
    "observe (KV changed)",
    "observe (health level changed)",
    "open_breaker",
    "set_admin (drain)",
    "set_weights (planner)",
    "set_role (planner)",
)


def sample_commands(fleet: Fleet, kind: str, count: int, seq: int = 0) -> list[Command]:
    """``count`` commands of ``kind``, each about a different replica where it can be, so that
    applying them in order is a steady state (a drain drains a new replica each time)."""
    if kind not in KINDS:
        raise ValueError(f"unknown command kind {kind!r}")
    n = fleet.replicas
    out: list[Command] = []
    for k in range(count):
        i = (seq + k) % n
        name = fleet.replica(i)
        ts = T0 + 1.0 + seq + k
        if kind == "observe (heartbeat)":
            cmd: Command = {"op": "observe", "replica": name, "obs": healthy_obs(i), "ts": ts}
        elif kind == "observe (KV changed)":
            kv = 0.3 + 0.1 * ((seq + k) // n % 5 + 1)
            cmd = {"op": "observe", "replica": name, "obs": healthy_obs(i, kv), "ts": ts}
        elif kind == "observe (health level changed)":
            level = 2 + (seq + k) // n % 2  # DEGRADED <-> HEALTHY: an event each time
            obs = {**healthy_obs(i), "level": level, "reason": "" if level == 3 else "slow"}
            cmd = {"op": "observe", "replica": name, "obs": obs, "ts": ts}
        elif kind == "open_breaker":
            cmd = {
                "op": "open_breaker",
                "replica": name,
                "failure_class": "gpu_oom",
                "open_s": 30.0,
                "node": fleet.host(i // fleet.per_host),
                "id": f"b{seq + k}",
                "ts": ts,
            }
        elif kind == "set_admin (drain)":
            admin = "drained" if (seq + k) // n % 2 == 0 else "enabled"
            cmd = {"op": "set_admin", "admin": admin, "replicas": [name], "by": "bench", "ts": ts}
        elif kind == "set_weights (planner)":
            weights = {
                fleet.replica(j): round(0.5 + ((j + seq + k) % 7) / 10, 4)
                for j in range(n)
                if fleet.role(j) == "active"
            }
            cmd = leader_cmd({"op": "set_weights", "weights": weights, "ts": ts})
        else:  # set_role (planner): promote a standby, then demote it again
            j = _standby_index(fleet, seq + k)
            role = "active" if (seq + k) // max(1, _standbys(fleet)) % 2 == 0 else "standby"
            cmd = leader_cmd(
                {
                    "op": "set_role",
                    "replica": fleet.replica(j),
                    "role": role,
                    "reason": "bench",
                    "planned": True,
                    "by": "planner",
                    "ts": ts,
                }
            )
        out.append(stamp(cmd))
    return out


def _standbys(fleet: Fleet) -> int:
    return sum(1 for i in range(fleet.replicas) if fleet.role(i) == "standby")


def _standby_index(fleet: Fleet, k: int) -> int:
    standbys = [i for i in range(fleet.replicas) if fleet.role(i) == "standby"]
    if not standbys:
        return k % fleet.replicas
    return standbys[k % len(standbys)]
