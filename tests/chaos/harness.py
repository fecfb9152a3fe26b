"""The chaos test bed: three hanode nodes in three network namespaces, clients in the root one.

Each namespace ``i`` (address ``bed.addr(i)``) runs two simulators (``--host 0.0.0.0``, ports
8001 and 8002) and one ``hanode run`` whose replicas are configured on loopback
(``http://127.0.0.1:8001``) with ``[node] advertise_host`` set to the namespace address, exactly
as an operator would write one host's config. Every host uses the same ports, as real hosts do.

Replicas: ``n<i>-a`` (active) and ``n<i>-b`` (standby) of one model with ``min_active = 3``, so a
dead host costs one active replica and the planner must promote a standby elsewhere.

Around the processes: ``Load`` (official ``openai`` clients, ``max_retries=0``, bounded loops),
``Monitor`` (every node's ``/status`` and ``/events`` polled in threads), ``Ledger`` (the writes
the cluster acknowledged: drains and roles). Every process is ours and stopped by its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import OpenAI

from hanode.devtools.netns import NetBed
from hanode.devtools.procs import PACKAGE_ROOT, ChildProcess, http_get, node_config_toml

MODEL = "m"
SECRET = "chaos-suite-secret-0123456789abcdef"
ROUTER_PORT, OPS_PORT, API_PORT, RAFT_PORT = 8000, 9100, 9200, 9300
SIM_PORTS = {"a": 8001, "b": 8002}
SIM_ARGS = ("--ttft-ms", "5", "--tpot-ms", "1", "--load-s", "0")  # no cold start
CLIENT_TIMEOUT_S = 15.0  # above the 10 s bound, so a slow request is measured, not cut
SLOW_S = 10.0
LIBFAKETIME = next(
    (str(p) for p in sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))),
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
)

SECTIONS: dict[str, dict[str, Any]] = {
    "health": {"interval_s": 0.5, "timeout_s": 1.0, "rise": 2, "fall": 2, "l2_interval_s": 3600.0},
    "cluster": {
        "election_min_s": 0.5,
        "election_max_s": 1.5,
        "planner_interval_s": 0.5,
        "heartbeat_s": 2.0,
        "demote_hold_s": 5.0,
        "checkpoint_s": 5.0,  # state digests compared every 5 s: a divergence heals in a fault
    },
    "breaker": {
        "consecutive_failures": 2,
        "oom_trip_count": 2,
        "open_base_s": 5.0,
        "open_max_s": 10.0,
    },
}


def faketime_env(offset: str) -> dict[str, str]:
    """libfaketime preloaded with a wall-clock offset only.

    ``FAKETIME_DONT_FAKE_MONOTONIC=1`` is required: libfaketime 0.9.10 otherwise returns the
    faked *wall-clock* value for CLOCK_MONOTONIC too, and CPython's ``Lock.acquire(timeout=)``
    (sem_clockwait on CLOCK_MONOTONIC with an absolute deadline the kernel reads on the real
    clock) then blocks for ever: the daemon would hang, which is not what a skewed host does.
    A real host's skewed clock is its wall clock; its monotonic clock is never compared
    across hosts. With it, though, ``clock_nanosleep`` on an absolute monotonic deadline (what
    ``time.sleep`` uses) fails with EINVAL; ``faketime_shim/sitecustomize.py`` makes
    ``time.sleep`` use ``select`` in that process.
    """
    shim = Path(__file__).resolve().parent / "faketime_shim"  # time.sleep without EINVAL
    return {
        "LD_PRELOAD": LIBFAKETIME,
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join([str(shim), str(PACKAGE_ROOT)]),
    }


class NsProcess(ChildProcess):
    """A Python child started inside a namespace (``ip netns exec`` execs it: same pid)."""

    def __init__(
        self,
        bed: NetBed,
        i: int,
        argv: list[str],
        *,
        kind: str,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.kind = kind
        super().__init__(bed.exec_argv(i, argv), env=env, log_path=log_path)


@dataclass
class Node:
    i: int
    bed: NetBed
    tmp: Path
    daemon: NsProcess | None = None
    sims: dict[str, NsProcess] = field(default_factory=dict)
    starts: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"n{self.i}"

    @property
    def addr(self) -> str:
        return self.bed.addr(self.i)

    @property
    def raft(self) -> str:
        return f"{self.addr}:{RAFT_PORT}"

    @property
    def api(self) -> str:
        return f"{self.addr}:{API_PORT}"

    @property
    def router_url(self) -> str:
        return f"http://{self.addr}:{ROUTER_PORT}"

    @property
    def ops_url(self) -> str:
        return f"http://{self.addr}:{OPS_PORT}"

    @property
    def config_path(self) -> Path:
        return self.tmp / f"{self.name}.toml"

    @property
    def data_dir(self) -> Path:
        return self.tmp / f"{self.name}-data"

    def replica(self, kind: str) -> str:
        return f"{self.name}-{kind}"

    def pids(self) -> list[int]:
        procs = [self.daemon, *self.sims.values()]
        return [p.pid for p in procs if p is not None and p.alive]

    def status(self, timeout: float = 1.5) -> dict[str, Any]:
        code, _, body = http_get(self.ops_url + "/status", timeout)
        if code != 200:
            raise RuntimeError(f"{self.name}: GET /status -> {code}")
        doc: dict[str, Any] = json.loads(body)
        return doc

    def events(self, after: int = 0, timeout: float = 1.5) -> list[dict[str, Any]]:
        code, _, body = http_get(f"{self.ops_url}/events?after={after}", timeout)
        if code != 200:
            raise RuntimeError(f"{self.name}: GET /events -> {code}")
        events: list[dict[str, Any]] = json.loads(body)["events"]
        return events

    def client(self, timeout: float = CLIENT_TIMEOUT_S) -> OpenAI:
        return OpenAI(base_url=self.router_url + "/v1", api_key="x", max_retries=0, timeout=timeout)


def write_config(node: Node, peers: Sequence[str], *, advertise: bool = True) -> Path:
    sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in SECTIONS.items()}
    sections["node"] = {"advertise_host": node.addr} if advertise else {}
    sections["router"] = {"listen": f"{node.addr}:{ROUTER_PORT}"}
    sections["metrics"] = {"listen": f"{node.addr}:{OPS_PORT}"}
    sections["api"] = {"listen": node.api}
    sections["cluster"].update(
        {"raft_listen": node.raft, "peers": list(peers), "secret_file": str(node.tmp / "secret")}
    )
    replicas = [
        {
            "name": node.replica(kind),
            "model": MODEL,
            "url": f"http://127.0.0.1:{port}",
            "engine": "vllm",
            "role": "active" if kind == "a" else "standby",
        }
        for kind, port in SIM_PORTS.items()
    ]
    text = node_config_toml(
        name=node.name,
        data_dir=node.data_dir,
        router_port=ROUTER_PORT,
        metrics_port=OPS_PORT,
        replicas=replicas,
        sections=sections,
        models=[{"name": MODEL, "min_active": 3, "redundancy": "n_plus_1"}],
    )
    if not advertise:  # node_config_toml puts a loopback one in for one-host clusters
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("advertise_host"))
    node.config_path.write_text(text)
    return node.config_path


class ChaosCluster:
    """Three nodes in three namespaces; ``close`` stops every process by pid and removes the bed."""

    def __init__(self, tmp: Path, count: int = 3) -> None:
        self.tmp = tmp
        self.bed = NetBed(count)
        self.nodes = [Node(i, self.bed, tmp) for i in range(1, count + 1)]
        (tmp / "secret").write_text(SECRET + "\n")
        (tmp / "secret").chmod(0o600)
        self.strays: list[ChildProcess] = []  # one-off processes (refused configs)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # -- lifetime ------------------------------------------------------------------------------
    def up(self) -> None:
        self.bed.up()
        for node in self.nodes:
            self.start_sims(node)
            write_config(node, [p.raft for p in self.nodes if p is not node])
        for node in self.nodes:
            self.spawn(node)
        for node in self.nodes:
            self.ready(node)

    def start_sims(self, node: Node) -> None:
        for kind, port in SIM_PORTS.items():
            sim = node.sims.get(kind)
            if sim is not None and sim.alive:
                continue
            argv = [sys.executable, "-m", "hanode.sim", "--host", "0.0.0.0", "--port", str(port)]
            argv += ["--model", MODEL, *SIM_ARGS]
            node.sims[kind] = NsProcess(
                self.bed,
                node.i,
                argv,
                kind="sim",
                log_path=self.tmp / f"{node.replica(kind)}-{time.monotonic_ns()}.log",
            )

    def spawn(self, node: Node, env: dict[str, str] | None = None) -> NsProcess:
        assert node.daemon is None or not node.daemon.alive, f"{node.name} is running"
        node.starts += 1
        node.env = dict(env or {})
        argv = [sys.executable, "-m", "hanode", "run", "--config", str(node.config_path)]
        node.daemon = NsProcess(
            self.bed,
            node.i,
            argv,
            kind="node",
            env=node.env,
            log_path=self.tmp / f"{node.name}-run{node.starts}.log",
        )
        return node.daemon

    def ready(self, node: Node, timeout: float = 40.0) -> None:
        assert node.daemon is not None
        node.daemon.wait_listening(timeout)

    def restart(self, node: Node, env: dict[str, str] | None = None) -> None:
        self.spawn(node, env)
        self.ready(node)

    def stop_daemon(self, node: Node, sig: int = signal.SIGTERM) -> int | None:
        proc = node.daemon
        if proc is None:
            return None
        if proc.alive:
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot exit
            proc.kill(sig)
        return proc.stop(timeout=10.0)

    def kill_host(self, node: Node) -> None:
        """The host dies: its link goes down and every process on it is SIGKILLed."""
        self.bed.link(node.i, up=False)
        for proc in [node.daemon, *node.sims.values()]:
            if proc is not None and proc.alive:
                proc.kill(signal.SIGKILL)
        for proc in [node.daemon, *node.sims.values()]:
            if proc is not None:
                proc.stop(timeout=5.0)

    def revive_host(self, node: Node) -> None:
        self.bed.link(node.i, up=True)
        self.start_sims(node)
        self.restart(node, node.env)

    def close(self) -> list[str]:
        """Stop every process (by pid), remove the bed; returns leaks (what was left)."""
        leaks: list[str] = []
        procs: list[ChildProcess] = list(self.strays)
        for node in self.nodes:
            procs += [p for p in [node.daemon, *node.sims.values()] if p is not None]
        for proc in procs:
            with contextlib.suppress(OSError):
                if proc.alive:
                    os.kill(proc.pid, signal.SIGCONT)
        for proc in procs:
            try:
                proc.stop(timeout=5.0)
            except Exception as exc:  # keep stopping the others
                leaks.append(f"pid {proc.pid}: stop failed: {exc!r}")
        for node in self.nodes:
            if node.i and self.bed.ns(node.i) in _netns_list():
                strays = [p for p in _ns_pids(self.bed, node.i)]
                leaks += [f"pid {p} still in {self.bed.ns(node.i)}" for p in strays]
        leaks += self.bed.down()
        return leaks

    # -- observation ---------------------------------------------------------------------------
    def statuses(self, nodes: Sequence[Node] | None = None) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for node in nodes if nodes is not None else self.nodes:
            with contextlib.suppress(Exception):
                out[node.name] = node.status()
        return out

    def ctl(
        self, node: Node, *args: str, timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        """``hanodectl`` against ``node``'s API, from the root namespace, as an operator runs it."""
        cmd = [sys.executable, "-m", "hanode.cli.ctl", "--endpoint", node.api, "--timeout", "5"]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(PACKAGE_ROOT)
        env["XDG_CONFIG_HOME"] = str(self.tmp / "xdg")
        env.pop("HANODE_ENDPOINT", None)
        env.pop("HANODE_TOKEN", None)
        try:
            return subprocess.run(
                [*cmd, *args],
                cwd=PACKAGE_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, "", f"timed out after {timeout}s")


def _netns_list() -> list[str]:
    from hanode.devtools.netns import namespaces

    return namespaces()


def _ns_pids(bed: NetBed, i: int) -> list[int]:
    from hanode.devtools.netns import namespace_pids

    return namespace_pids(bed.ns(i))


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.25,
) -> tuple[Any, float]:
    """Poll until truthy; returns (value, seconds taken) or (None, timeout) at the deadline."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value, time.monotonic() - start
        if time.monotonic() >= deadline:
            return None, time.monotonic() - start
        time.sleep(interval)
