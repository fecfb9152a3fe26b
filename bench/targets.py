"""The single-node setup: three simulators and, in front of the same three, nginx, hanode (one
node per ``[router] workers`` variant: 1, 2 and "auto"), vllm-router and LiteLLM's proxy;
``direct`` is simulator 0 with nothing in front. Every single-node measurement
(:mod:`bench.overhead`, :mod:`bench.streaming`, :mod:`bench.stream_relay`,
:mod:`bench.replica_failover`) runs on it.

A target that cannot start (an LLM router whose install failed, a workers variant this hanode
does not know) is left out with its reason in ``skipped``; the core three must start.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench import llm_routers
from bench.harness import (
    HOST,
    BenchError,
    ProcGroup,
    cpu_seconds,
    descendants,
    failure_line,
    free_port,
    say,
    tree_cpu_seconds,
)
from bench.nginx import Nginx
from bench.venvs import Installed, Skip
from hanode.devtools.procs import (
    ChildProcess,
    NodeProcess,
    SimProcess,
    http_get,
    node_config_toml,
    wait_until,
)

MODEL = "bench-model"
NAMES = ("direct", "nginx", "hanode")  # always there; the others when they start
SIM_ARGS = ("--model", MODEL, "--ttft-ms", "0", "--tpot-ms", "0", "--capacity", "1024")
# target name -> [router] workers; "hanode" stays the one-process node the other parts use
HANODE_VARIANTS: dict[str, int | str] = {"hanode": 1, "hanode-w2": 2, "hanode-auto": "auto"}
VLLM_ROUTER, LITELLM = "vllm-router", "litellm"
ORDER = ("direct", "nginx", VLLM_ROUTER, LITELLM, *HANODE_VARIANTS)  # table columns


@dataclass(frozen=True, slots=True)
class Extras:
    """The targets beyond the core three: the LLM routers' venvs and hanode's variants."""

    vllm_router: Installed | Skip | None = None
    litellm: Installed | Skip | None = None
    hanode_variants: tuple[str, ...] = ()  # names from HANODE_VARIANTS besides "hanode"


@dataclass(slots=True)
class Targets:
    sims: list[SimProcess]
    nginx: Nginx
    node: NodeProcess  # the workers = 1 node
    ports: dict[str, int] = field(default_factory=dict)  # target name -> port
    cpu_of: dict[str, Callable[[], float]] = field(default_factory=dict)  # name -> CPU-seconds
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # what clients must send
    nodes: dict[str, NodeProcess] = field(default_factory=dict)  # every hanode variant
    procs: dict[str, ChildProcess] = field(default_factory=dict)  # the LLM routers
    skipped: dict[str, str] = field(default_factory=dict)  # target name -> why it is not here

    @property
    def names(self) -> list[str]:
        """The targets that run, in table order."""
        return sorted(self.ports, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))

    def url(self, name: str, path: str = "/v1/completions") -> str:
        return f"http://{HOST}:{self.ports[name]}{path}"

    def headers_of(self, name: str) -> dict[str, str]:
        return self.headers.get(name, {})

    def set_sim_timing(self, **settings: float) -> None:
        """Change the simulators' timing in place (``/admin/config``), same processes."""
        for sim in self.sims:
            sim.admin("config", settings)


def node_config(tmp: Path, sims: list[str], name: str = "hanode", workers: int | str = 1) -> Path:
    """A standalone node (no ``[cluster]``) over the ``sims`` URLs, health checked every second;
    ``workers`` other than 1 is written as ``[router] workers``."""
    data_dir = tmp / f"{name}-data"
    data_dir.mkdir()
    sections: dict[str, dict[str, Any]] = {"health": {"interval_s": 1.0}}
    if workers != 1:
        sections["router"] = {"workers": workers}
    text = node_config_toml(
        name=name,
        data_dir=data_dir,
        router_port=free_port(),
        metrics_port=free_port(),
        replicas=[
            {"name": f"sim{i}", "model": MODEL, "url": url, "engine": "vllm"}
            for i, url in enumerate(sims)
        ],
        sections=sections,
    )
    config = tmp / f"{name}.toml"
    config.write_text(text)
    return config


def start_node(group: ProcGroup, tmp: Path, name: str, upstreams: list[str]) -> NodeProcess:
    """The hanode variant ``name`` over ``upstreams``, once /status has them all healthy."""
    node = group.node(name, node_config(tmp, upstreams, name, HANODE_VARIANTS[name]))

    def all_healthy() -> bool:
        if not node.alive:
            raise BenchError(f"{name} exited")
        status, _, body = http_get(node.ops_url + "/status")
        reps = json.loads(body).get("replicas", [])
        return (
            status == 200
            and len(reps) == len(upstreams)
            and all(r.get("health") == "healthy" for r in reps)
        )

    try:
        wait_until(all_healthy, 30.0, 0.2, f"all replicas healthy in {name} /status")
        llm_routers.wait_serving(node, node.router_port, MODEL, name, timeout_s=15.0)
    except (TimeoutError, BenchError) as exc:
        raise BenchError(f"{exc}\n--- {name} output ---\n{node.output()[-3000:]}") from None
    return node


def add_extras(
    group: ProcGroup, tmp: Path, t: Targets, upstreams: list[str], extras: Extras
) -> None:
    """Start what ``extras`` names next to the core targets; what fails goes to ``skipped``."""
    for name in extras.hanode_variants:
        try:
            node = start_node(group, tmp, name, upstreams)
        except (BenchError, TimeoutError, RuntimeError) as exc:
            t.skipped[name] = f"did not start: {failure_line(exc)}"
            continue
        t.nodes[name] = node
        t.ports[name] = node.router_port
        t.cpu_of[name] = partial(tree_cpu_seconds, node.pid)
        workers = len(descendants(node.pid))
        say(f"{name} on port {node.router_port} (pid {node.pid}, {workers} child processes)")
    for name, tool in ((VLLM_ROUTER, extras.vllm_router), (LITELLM, extras.litellm)):
        if tool is None:
            continue
        if isinstance(tool, Skip):
            t.skipped[name] = tool.reason
            continue
        try:
            if name == VLLM_ROUTER:
                proc, port = llm_routers.start_vllm_router(group, tool, name, upstreams, MODEL)
            else:
                proc, port, headers = llm_routers.start_litellm(
                    group, tool, name, tmp, upstreams, MODEL
                )
                t.headers[name] = headers
        except (BenchError, TimeoutError, RuntimeError, OSError) as exc:
            t.skipped[name] = f"did not start: {failure_line(exc)}"
            continue
        t.procs[name] = proc
        t.ports[name] = port
        t.cpu_of[name] = partial(tree_cpu_seconds, proc.pid)
        say(f"{name} {tool.version} on port {port} (pid {proc.pid})")


def start(group: ProcGroup, tmp: Path, nginx_binary: str, extras: Extras | None = None) -> Targets:
    """Start everything and return once every hanode reports all three replicas healthy."""
    sims = [group.sim(f"sim{i}", *SIM_ARGS) for i in range(3)]
    say(f"simulators on ports {[s.port for s in sims]} (pids {[s.pid for s in sims]})")
    nginx = Nginx(nginx_binary, tmp / "nginx", free_port(), [s.port for s in sims])
    nginx.start(group)
    say(f"nginx on port {nginx.port} (pids {nginx.pids()})")
    upstreams = [s.url for s in sims]
    node = start_node(group, tmp, "hanode", upstreams)
    say(f"hanode on port {node.router_port} (pid {node.pid}), all replicas healthy")
    sim0 = sims[0]
    t = Targets(
        sims,
        nginx,
        node,
        ports={"direct": sim0.port, "nginx": nginx.port, "hanode": node.router_port},
        cpu_of={
            "direct": lambda: cpu_seconds(sim0.pid),
            "nginx": nginx.cpu_seconds,
            "hanode": lambda: tree_cpu_seconds(node.pid),
        },
        nodes={"hanode": node},
    )
    if extras is not None:
        add_extras(group, tmp, t, upstreams, extras)
    return t
