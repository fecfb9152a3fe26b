"""Helpers of the cluster end-to-end tests: N ``hanode run`` nodes in a Raft cluster on loopback.

Each node gets its own config, data dir and simulators under ``tmp_path``; every port (router,
ops, gRPC API, Raft) is chosen once and written into the config, so a restarted node comes back
on the same addresses. Everything is stopped by its own pid. ``hanodectl`` runs as a separate
process (``python -m hanode.cli.ctl``), exactly as an operator would run it.

    c = RaftCluster(tmp_path, [("n1", [Replica("r1")]), ...]).start()
    c.wait_leader()
    c.ctl_ok(0, "drain", "r1")
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from hanode.actuators.command import RunRecord
from hanode.devtools.procs import (
    PACKAGE_ROOT,
    NodeProcess,
    SimProcess,
    free_port,
    http_get,
    node_config_toml,
    start_sim,
    wait_until,
)

MODEL = "sim-model"
SECRET = "e2e-cluster-secret-0123456789"
FAST_SIM = ("--ttft-ms", "2", "--tpot-ms", "0")
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]

# Short timings: health every 0.2 s, elections within a second, a planner round every 0.3 s.
FAST_SECTIONS: dict[str, dict[str, Any]] = {
    "health": {"interval_s": 0.2, "timeout_s": 1.0, "rise": 2, "fall": 2},
    "cluster": {
        "election_min_s": 0.3,
        "election_max_s": 0.9,
        "planner_interval_s": 0.3,
        "heartbeat_s": 2.0,
    },
}


@dataclass
class Replica:
    name: str
    role: str = "active"
    model: str = MODEL
    sim_args: tuple[str, ...] = FAST_SIM
    # "command": the node runs this replica's simulator itself (docs/recovery.md); the test
    # starts nothing for it, and stops what the node left running by its recorded pid.
    actuator: str = "none"
    standby: str = "hot"
    port: int = field(default_factory=free_port)
    command: tuple[str, ...] = ()  # instead of the simulator on `port` (actuator "command")
    extra: dict[str, Any] = field(default_factory=dict)  # more [[replicas]] keys, e.g. reload

    def entry(self, url: str) -> dict[str, Any]:
        """Its [[replicas]] table."""
        entry: dict[str, Any] = {
            "name": self.name,
            "model": self.model,
            "url": url,
            "engine": "vllm",
            "role": self.role,
        }
        if self.actuator == "command":
            entry["actuator"] = "command"
            entry["command"] = list(self.command) or [
                sys.executable, "-m", "hanode.sim", "--port", str(self.port),
                "--model", self.model, *self.sim_args,
            ]  # fmt: skip
            entry["standby"] = self.standby
        entry.update(self.extra)
        return entry


@dataclass
class Node:
    """One node of the cluster: its fixed addresses, its simulators and (when up) its process."""

    name: str
    replicas: list[Replica]
    tmp_path: Path
    secret_file: Path | None
    raft_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    router_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    sims: dict[str, SimProcess] = field(default_factory=dict)
    proc: NodeProcess | None = None
    starts: int = 0
    env: dict[str, str] = field(default_factory=dict)  # e.g. HANODE_PROTOCOL for an old node

    @property
    def raft(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    @property
    def router_url(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    @property
    def config_path(self) -> Path:
        return self.tmp_path / f"{self.name}.toml"

    @property
    def data_dir(self) -> Path:
        return self.tmp_path / f"{self.name}-data"

    def write_config(
        self,
        peers: Sequence[str],
        sections: dict[str, dict[str, Any]],
        models: Sequence[dict[str, Any]] = (),
    ) -> Path:
        merged: dict[str, dict[str, Any]] = {k: dict(v) for k, v in FAST_SECTIONS.items()}
        for table, values in sections.items():
            merged.setdefault(table, {}).update(values)
        cluster = merged.setdefault("cluster", {})
        cluster["raft_listen"] = self.raft
        cluster["peers"] = list(peers)
        if self.secret_file is not None:
            cluster["secret_file"] = str(self.secret_file)
        merged["api"] = {"listen": self.api, **merged.get("api", {})}
        replicas = [
            r.entry(
                f"http://127.0.0.1:{r.port}" if r.actuator == "command" else self.sims[r.name].url
            )
            for r in self.replicas
        ]
        text = node_config_toml(
            name=self.name,
            data_dir=self.data_dir,
            router_port=self.router_port,
            metrics_port=self.metrics_port,
            replicas=replicas,
            sections=merged,
        )
        for model in models:  # [[models]]: redundancy policies (the same on every node)
            text += "\n[[models]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in model.items())
        self.config_path.write_text(text)
        return self.config_path

    def spawn(self, extra_args: Sequence[str] = ()) -> NodeProcess:
        """Start ``hanode run`` without waiting for its listening line (see :meth:`ready`)."""
        assert self.proc is None or not self.proc.alive, f"{self.name} is already running"
        self.starts += 1
        log = self.tmp_path / f"{self.name}-run{self.starts}.log"
        self.proc = NodeProcess(
            self.config_path,
            wait=False,
            log_path=log,
            extra_args=list(extra_args),
            env=self.env or None,
        )
        return self.proc

    def ready(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc is not None
        try:
            event = self.proc.wait_listening(timeout)
        except BaseException:
            self.proc.stop()
            raise
        self.proc.router_port = int(event["router_port"])
        self.proc.metrics_port = int(event["metrics_port"])
        assert self.proc.router_port == self.router_port, event
        assert int(event.get("api_port", 0)) == self.api_port, event
        return event

    def ops_status(self, timeout: float = 2.0) -> dict[str, Any]:
        """The status document from the ops port (cheap; hanodectl shows the same document)."""
        code, _, body = http_get(f"http://127.0.0.1:{self.metrics_port}/status", timeout)
        if code != 200:
            raise RuntimeError(f"{self.name}: GET /status -> {code}: {body!r}")
        doc: dict[str, Any] = json.loads(body)
        return doc

    def ops_replicas(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.ops_status()["replicas"]}

    def supervised_pids(self) -> dict[str, int]:
        """Replica -> pid of the processes this node's supervisor runs (its state files)."""
        out: dict[str, int] = {}
        for path in sorted((self.data_dir / "replicas").glob("*.json")):
            record = RunRecord.from_json(path.read_bytes())
            if record is not None and record.alive():
                out[path.stem] = record.pid
        return out

    def stop_supervised(self) -> None:
        """Stop what the node left running (a stopped daemon leaves its replicas to the next
        one): each by its recorded pid, checked against its start time."""
        for pid in self.supervised_pids().values():
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    def chat_requests(self, replica: str) -> int:
        """Chat completions the simulator of ``replica`` has received so far."""
        state = self.sims[replica].admin("state")
        return int(state["per_endpoint"].get("/v1/chat/completions", 0))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def openai(self, timeout: float = 5.0) -> OpenAI:
        return OpenAI(base_url=self.router_url + "/v1", api_key="x", max_retries=0, timeout=timeout)

    def ask(self, client: OpenAI | None = None, model: str = MODEL) -> str:
        """One chat completion through this node's router; returns the replica that served it."""
        client = client or self.openai()
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, max_tokens=2
        )
        out = raw.parse()
        assert out.choices and out.choices[0].message.content, out
        replica = raw.headers.get("x-hanode-replica")
        assert replica, dict(raw.headers)
        return replica


def _matches(value: Any, want: Any) -> bool:
    """``want`` is ``value``, or (for dicts) a subset of it, recursively."""
    if isinstance(want, dict):
        return isinstance(value, dict) and all(
            k in value and _matches(value[k], v) for k, v in want.items()
        )
    return bool(value == want)


class CtlError(AssertionError):
    pass


class RaftCluster:
    """Nodes, their simulators and hanodectl; ``stop_all`` stops every process by its pid."""

    def __init__(
        self,
        tmp_path: Path,
        layout: Sequence[tuple[str, Sequence[Replica]]],
        sections: dict[str, dict[str, Any]] | None = None,
        models: Sequence[dict[str, Any]] = (),
        secret: str = SECRET,
    ) -> None:
        self.tmp_path = tmp_path
        self.sections = sections or {}
        self.models = list(models)
        self.secret_file = tmp_path / "raft.secret"
        self.secret_file.write_text(secret + "\n")
        self.secret_file.chmod(0o600)
        self.nodes = [Node(name, list(reps), tmp_path, self.secret_file) for name, reps in layout]
        self.extra: list[Node] = []  # nodes added later (not in the initial peers)

    # -- lifetime ------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> RaftCluster:
        try:
            for node in self.nodes:
                self.start_sims(node)
            for node in self.nodes:
                peers = [p.raft for p in self.nodes if p is not node]
                node.write_config(peers, self.sections, self.models)
            self.start_nodes(self.nodes, timeout)
        except BaseException:
            self.stop_all()
            raise
        return self

    def start_sims(self, node: Node) -> None:
        for r in node.replicas:
            if r.actuator == "none":
                node.sims[r.name] = self.start_sim(node, r)

    def start_sim(self, node: Node, r: Replica, port: int | None = None) -> SimProcess:
        log = self.tmp_path / f"sim-{r.name}-{time.monotonic_ns()}.log"
        return start_sim("--model", r.model, *r.sim_args, port=port, wait="none", log_path=log)

    def start_nodes(self, nodes: Iterable[Node], timeout: float = 30.0) -> None:
        nodes = list(nodes)
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.ready(timeout)

    def add_node(
        self,
        name: str,
        replicas: Sequence[Replica],
        *,
        secret: str | None = SECRET,
        peers: Sequence[str] | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
    ) -> Node:
        """Prepare (sims, config) one more node; start it with ``spawn``/``ready``."""
        secret_file = None
        if secret is not None:
            secret_file = self.tmp_path / f"{name}.secret"
            secret_file.write_text(secret + "\n")
            secret_file.chmod(0o600)  # a secret file readable by others is refused at start
        node = Node(name, list(replicas), self.tmp_path, secret_file)
        self.extra.append(node)
        self.start_sims(node)
        node.write_config(
            [p.raft for p in self.nodes] if peers is None else peers,
            {**self.sections, **(sections or {})},
            self.models,
        )
        return node

    def all_nodes(self) -> list[Node]:
        return self.nodes + self.extra

    def stop_nodes(self, nodes: Iterable[Node], sig: int = signal.SIGTERM) -> None:
        nodes = [n for n in nodes if n.proc is not None]
        for node in nodes:
            assert node.proc is not None
            if node.proc.alive:
                os.kill(node.proc.pid, signal.SIGCONT)  # a stopped process cannot exit
                node.proc.kill(sig)
        for node in nodes:
            assert node.proc is not None
            node.proc.stop(timeout=10.0)

    def stop_all(self) -> None:
        for node in self.all_nodes():
            if node.proc is not None and node.proc.alive:
                with contextlib.suppress(OSError):
                    os.kill(node.proc.pid, signal.SIGCONT)
        for node in self.all_nodes():
            for proc in [node.proc, *node.sims.values()]:
                if proc is None:
                    continue
                try:
                    proc.stop(timeout=5.0)
                except Exception as exc:  # keep stopping the others
                    print(f"stopping pid {proc.pid} failed: {exc!r}")
            node.stop_supervised()

    def outputs(self, tail: int = 3000) -> str:
        parts = []
        for log in sorted(self.tmp_path.glob("n*-run*.log")):
            text = log.read_text(errors="replace")[-tail:]
            parts.append(f"--- {log.name} ---\n{text}")
        return "\n".join(parts)

    # -- hanodectl -----------------------------------------------------------------------------
    def ctl(
        self, node: Node | int, *args: str, timeout: float = 15.0
    ) -> subprocess.CompletedProcess[str]:
        target = self.nodes[node] if isinstance(node, int) else node
        cmd = [
            sys.executable,
            "-m",
            "hanode.cli.ctl",
            "--endpoint",
            target.api,
            "--timeout",
            "5",
            *args,
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env["XDG_CONFIG_HOME"] = str(self.tmp_path / "xdg")  # no operator config file
        env.pop("HANODE_ENDPOINT", None)
        env.pop("HANODE_TOKEN", None)
        return subprocess.run(
            cmd,
            cwd=PACKAGE_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ctl_ok(self, node: Node | int, *args: str, timeout: float = 15.0) -> str:
        done = self.ctl(node, *args, timeout=timeout)
        if done.returncode != 0:
            raise CtlError(
                f"hanodectl {' '.join(args)} -> rc={done.returncode}: "
                f"{done.stderr.strip()} {done.stdout.strip()}"
            )
        return done.stdout

    def ctl_json(self, node: Node | int, *args: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.ctl_ok(node, *args, "--json"))
        return doc

    def status(self, node: Node | int) -> dict[str, Any]:
        return self.ctl_json(node, "status")

    def members(self, node: Node | int) -> list[dict[str, Any]]:
        members: list[dict[str, Any]] = self.ctl_json(node, "members")["members"]
        return members

    def breakers(self, node: Node | int) -> list[dict[str, Any]]:
        breakers: list[dict[str, Any]] = self.ctl_json(node, "breakers")["breakers"]
        return breakers

    def parallel(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        """``fn`` over ``items`` in threads (hanodectl processes start in ~0.5 s each)."""
        with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
            return list(pool.map(fn, items))

    # -- waits ---------------------------------------------------------------------------------
    def wait_leader(
        self, nodes: Sequence[Node] | None = None, timeout: float = 20.0, exclude: str = ""
    ) -> str:
        """Wait until every one of ``nodes`` names the same leader (not ``exclude``)."""
        nodes = list(nodes) if nodes is not None else self.nodes
        seen: list[Any] = []

        def agreed() -> str | None:
            leaders = self.parallel(lambda n: n.ops_status()["leader"], nodes)
            seen[:] = leaders
            first = leaders[0]
            if first and first != exclude and all(x == first for x in leaders):
                return str(first)
            return None

        return wait_until(
            agreed, timeout, 0.2, message=lambda: f"one leader agreed by all (saw {seen})"
        )

    def wait_replicas(
        self,
        nodes: Sequence[Node] | None,
        want: dict[str, dict[str, Any]],
        timeout: float = 20.0,
    ) -> dict[str, dict[str, Any]]:
        """Wait until each node's status shows ``want`` (replica -> {field: value})."""
        nodes = list(nodes) if nodes is not None else self.nodes
        last: dict[str, Any] = {}

        def reached() -> dict[str, dict[str, Any]] | None:
            docs = self.parallel(lambda n: n.ops_status(), nodes)
            out = {}
            for node, doc in zip(nodes, docs, strict=True):
                reps = {r["name"]: r for r in doc["replicas"]}
                last[node.name] = {
                    n: {k: reps.get(n, {}).get(k) for k in fields} for n, fields in want.items()
                }
                for name, fields in want.items():
                    rep = reps.get(name)
                    if rep is None or not _matches(rep, fields):
                        return None
                out[node.name] = reps
            return out

        return wait_until(reached, timeout, 0.2, message=lambda: f"replicas {want} (saw {last})")

    def wait_serving(self, timeout: float = 30.0) -> None:
        """Every active replica healthy with a weight on every node, a leader agreed."""
        want = {r.name: {"health": "healthy"} for n in self.nodes for r in n.replicas}
        self.wait_leader(timeout=timeout)
        self.wait_replicas(None, want, timeout)

        def routable() -> bool:
            docs = self.parallel(lambda n: n.ops_status(), self.nodes)
            for doc in docs:
                for r in doc["replicas"]:
                    if r["role"] == "active" and r["admin"] == "enabled" and r["weight"] <= 0:
                        return False
            return True

        wait_until(routable, timeout, 0.2, message="active replicas routable everywhere")
