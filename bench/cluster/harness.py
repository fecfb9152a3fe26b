"""A cluster of ``nodes`` nodes on loopback for the cluster measurements (hanode.devtools parts).

Each node has simulators of its own; every port (router, ops, gRPC API, Raft) is chosen once and
written into the node's config (:func:`hanode.devtools.procs.node_config_toml`, which also sets
``[node].advertise_host``), so a killed node comes back on the same addresses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.harness import HOST, BenchError, ProcGroup, free_port
from hanode.devtools.procs import NodeProcess, SimProcess, http_get, node_config_toml, wait_until

MODEL = "bench-model"
T = TypeVar("T")
SECRET = "bench-cluster-secret-0123456789abcdef"
BODY = json.dumps(
    {"model": MODEL, "prompt": "Say hello to the cluster.", "max_tokens": 8},
    separators=(",", ":"),
).encode()
# Simulators: 10 ms to the first token, 2 ms per token (a request takes ~25 ms).
SIM_ARGS = ("--model", MODEL, "--ttft-ms", "10", "--tpot-ms", "2", "--capacity", "64")


@dataclass(slots=True)
class ClusterSettings:
    nodes: int = 7  # make bench; --quick runs 3
    replicas_per_node: int = 2
    settle_s: float = 3.0  # after every replica is healthy, before the idle window
    idle_s: float = 20.0
    traffic_s: float = 20.0
    traffic_rps_per_router: float = 4.0
    breaker_iterations: int = 16
    breaker_poll_s: float = 0.005
    failover_iterations: int = 5
    leader_poll_s: float = 0.01
    ceiling_threads: tuple[int, ...] = (
        4,
        16,
    )  # gRPC clients pushing writes (bench/cluster/ceiling.py)
    ceiling_s: float = 8.0
    # hanode settings of the cluster (production defaults except the breaker's)
    election_min_s: float = 0.4
    election_max_s: float = 1.4
    heartbeat_s: float = 10.0
    planner_interval_s: float = 1.0
    health_interval_s: float = 1.0
    oom_trip_count: int = 1
    open_base_s: float = 30.0  # long enough that no breaker half-opens during an iteration
    # Peers apply another router's open only within this share of a model's serving replicas;
    # one open of six is within the default 50 %, so the default stays.
    max_ejection_percent: float = 50.0


@dataclass
class ClusterNode:
    """One node's fixed addresses and its current process (a new one after each restart)."""

    name: str
    tmp: Path
    replicas: list[str]
    raft_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    router_port: int = field(default_factory=free_port)
    ops_port: int = field(default_factory=free_port)
    proc: NodeProcess | None = None
    starts: int = 0

    @property
    def raft(self) -> str:
        return f"{HOST}:{self.raft_port}"

    @property
    def config(self) -> Path:
        return self.tmp / f"{self.name}.toml"

    @property
    def data_dir(self) -> Path:
        return self.tmp / f"{self.name}-data"

    @property
    def journal(self) -> Path:
        return self.data_dir / "raft" / "raft.journal"

    @property
    def ops_url(self) -> str:
        return f"http://{HOST}:{self.ops_port}"

    def status(self) -> dict[str, Any]:
        code, _, body = http_get(self.ops_url + "/status")
        if code != 200:
            raise BenchError(f"{self.name}: GET /status -> {code}: {body[:200]!r}")
        doc: dict[str, Any] = json.loads(body)
        return doc

    def commit_index(self) -> int:
        return int(self.status().get("freshness", {}).get("commit_index", 0))

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        code, _, body = http_get(f"{self.ops_url}/events?after={after}")
        if code != 200:
            raise BenchError(f"{self.name}: GET /events -> {code}: {body[:200]!r}")
        events: list[dict[str, Any]] = json.loads(body)["events"]
        return events

    def spawn(self, group: ProcGroup) -> NodeProcess:
        """Start (or restart) the node on its config; returns once it listens."""
        self.starts += 1
        proc = self.proc = group.node(f"{self.name}-run{self.starts}", self.config)
        if proc.router_port != self.router_port:
            raise BenchError(
                f"{self.name}: listening on {proc.router_port}, not {self.router_port}"
            )
        return proc


class Cluster:
    def __init__(self, settings: ClusterSettings, group: ProcGroup, tmp: Path) -> None:
        self.s = settings
        self.group = group
        self.tmp = tmp
        self.secret = tmp / "raft.secret"
        self.secret.write_text(SECRET + "\n")
        self.secret.chmod(0o600)
        self.nodes = [
            ClusterNode(
                f"n{i + 1}", tmp, [f"n{i + 1}r{j}" for j in range(settings.replicas_per_node)]
            )
            for i in range(settings.nodes)
        ]
        self.sims: dict[str, SimProcess] = {}
        self._grpc: dict[str, Any] = {}

    @property
    def replicas(self) -> list[str]:
        return [r for n in self.nodes for r in n.replicas]

    def node(self, name: str) -> ClusterNode:
        return next(n for n in self.nodes if n.name == name)

    def sections(self, node: ClusterNode) -> dict[str, dict[str, Any]]:
        s = self.s
        return {
            "health": {"interval_s": s.health_interval_s},
            "breaker": {
                "oom_trip_count": s.oom_trip_count,
                "open_base_s": s.open_base_s,
                "max_ejection_percent": s.max_ejection_percent,
            },
            "cluster": {
                "raft_listen": node.raft,
                "peers": [p.raft for p in self.nodes if p is not node],
                "secret_file": str(self.secret),
                "election_min_s": s.election_min_s,
                "election_max_s": s.election_max_s,
                "planner_interval_s": s.planner_interval_s,
                "heartbeat_s": s.heartbeat_s,
            },
            "api": {"listen": f"{HOST}:{node.api_port}"},
        }

    def start(self) -> None:
        for name in self.replicas:
            self.sims[name] = self.group.sim(f"sim-{name}", *SIM_ARGS)
        for node in self.nodes:
            replicas = [
                {"name": r, "model": MODEL, "url": self.sims[r].url, "engine": "vllm"}
                for r in node.replicas
            ]
            node.config.write_text(
                node_config_toml(
                    name=node.name,
                    data_dir=node.data_dir,
                    router_port=node.router_port,
                    metrics_port=node.ops_port,
                    replicas=replicas,
                    sections=self.sections(node),
                )
            )
        for node in self.nodes:
            node.spawn(self.group)
        self.wait_serving(60.0)

    def wait_serving(self, timeout_s: float) -> str:
        """Wait for one leader and every replica healthy and routable on every node."""
        leader = self.wait_leader(self.nodes, timeout_s)
        want = set(self.replicas)

        def serving() -> bool:
            for node in self.nodes:
                reps = {r["name"]: r for r in node.status()["replicas"]}
                if set(reps) != want:
                    return False
                if any(r["health"] != "healthy" or r["weight"] <= 0 for r in reps.values()):
                    return False
            return True

        poll(serving, timeout_s, "every replica healthy and routable on every node", 0.1)
        return leader

    def wait_leader(self, nodes: Sequence[ClusterNode], timeout_s: float) -> str:
        def agreed() -> str | None:
            seen = [n.status().get("leader") for n in nodes]
            first = seen[0]
            return first if first and all(x == first for x in seen) else None

        leader: str = poll(agreed, timeout_s, "one leader named by every node", 0.05)
        return leader

    def reset_breaker(self, node: ClusterNode, replica: str) -> None:
        """An operator's reset (gRPC ResetBreaker), which closes the breaker everywhere."""
        import grpc

        from hanode._proto.hanode.v1 import control_pb2 as pb
        from hanode._proto.hanode.v1 import control_pb2_grpc

        stub = self._grpc.get(node.name)
        if stub is None:
            channel = grpc.insecure_channel(f"{HOST}:{node.api_port}")
            stub = self._grpc[node.name] = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
        stub.ResetBreaker(pb.ReplicaRequest(replica=replica), timeout=5.0)

    def sim_faults(self, replica: str, faults: dict[str, Any]) -> None:
        self.sims[replica].admin("faults", faults)


def poll(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float) -> T:
    """:func:`hanode.devtools.procs.wait_until`, failing as a BenchError that says what."""
    try:
        return wait_until(check, timeout_s, interval_s, f"cluster: {what}")
    except TimeoutError as exc:
        raise BenchError(str(exc)) from None
