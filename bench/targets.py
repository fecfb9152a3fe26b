"""The single-node setup: three simulators, and in front of the same three nginx and one hanode
node; ``direct`` is simulator 0 with nothing in front. Every single-node measurement
(:mod:`bench.overhead`, :mod:`bench.streaming`, :mod:`bench.replica_failover`) runs on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import HOST, BenchError, ProcGroup, cpu_seconds, free_port, say
from bench.nginx import Nginx
from hanode.devtools.procs import NodeProcess, SimProcess, http_get, node_config_toml, wait_until

MODEL = "bench-model"
NAMES = ("direct", "nginx", "hanode")
SIM_ARGS = ("--model", MODEL, "--ttft-ms", "0", "--tpot-ms", "0", "--capacity", "1024")


@dataclass(slots=True)
class Targets:
    sims: list[SimProcess]
    nginx: Nginx
    node: NodeProcess
    ports: dict[str, int] = field(default_factory=dict)  # target name -> port
    cpu_of: dict[str, Callable[[], float]] = field(default_factory=dict)  # name -> CPU-seconds

    def url(self, name: str, path: str = "/v1/completions") -> str:
        return f"http://{HOST}:{self.ports[name]}{path}"

    def set_sim_timing(self, **settings: float) -> None:
        """Change the simulators' timing in place (``/admin/config``), same processes."""
        for sim in self.sims:
            sim.admin("config", settings)


def node_config(tmp: Path, sims: list[SimProcess]) -> Path:
    """A standalone node (no ``[cluster]``) over ``sims``, health checked every second."""
    data_dir = tmp / "node-data"
    data_dir.mkdir()
    text = node_config_toml(
        name="bench",
        data_dir=data_dir,
        router_port=free_port(),
        metrics_port=free_port(),
        replicas=[
            {"name": f"sim{i}", "model": MODEL, "url": sim.url, "engine": "vllm"}
            for i, sim in enumerate(sims)
        ],
        sections={"health": {"interval_s": 1.0}},
    )
    config = tmp / "hanode.toml"
    config.write_text(text)
    return config


def start(group: ProcGroup, tmp: Path, nginx_binary: str) -> Targets:
    """Start everything and return once hanode reports all three replicas healthy."""
    sims = [group.sim(f"sim{i}", *SIM_ARGS) for i in range(3)]
    say(f"simulators on ports {[s.port for s in sims]} (pids {[s.pid for s in sims]})")
    nginx = Nginx(nginx_binary, tmp / "nginx", free_port(), [s.port for s in sims])
    nginx.start(group)
    say(f"nginx on port {nginx.port} (pids {nginx.pids()})")
    node = group.node("hanode", node_config(tmp, sims))

    def all_healthy() -> bool:
        status, _, body = http_get(node.ops_url + "/status")
        reps = json.loads(body).get("replicas", [])
        return (
            status == 200
            and len(reps) == len(sims)
            and all(r.get("health") == "healthy" for r in reps)
        )

    try:
        wait_until(all_healthy, 30.0, 0.2, "all replicas healthy in hanode /status")
    except TimeoutError as exc:
        raise BenchError(f"{exc}\n--- hanode output ---\n{node.output()[-3000:]}") from None
    say(f"hanode on port {node.router_port} (pid {node.pid}), all replicas healthy")
    sim0 = sims[0]
    return Targets(
        sims,
        nginx,
        node,
        ports={"direct": sim0.port, "nginx": nginx.port, "hanode": node.router_port},
        cpu_of={
            "direct": lambda: cpu_seconds(sim0.pid),
            "nginx": nginx.cpu_seconds,
            "hanode": lambda: cpu_seconds(node.pid),
        },
    )
