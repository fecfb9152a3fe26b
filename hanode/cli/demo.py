"""`hanode demo`: a scripted tour that ends by itself.

A three-node hanode cluster (Raft) in front of four simulated GPU replicas (one a standby
asleep in the engine's sleep mode); each node runs its own replicas (``actuator = "command"``
starting ``hanode sim``). Traffic from the official ``openai`` client through every node; one
replica turns slow, another crashes: its node restarts it by itself while the leader wakes the
sleeping standby and promotes it (the incident's MTTR is printed), then the leader node itself
is killed; at the end a rolling reload (``hanodectl reload --surge``) goes over every replica
under traffic. Watch weights, health, roles and traffic shares move away and back, with no
failed request on the client side. Everything runs on loopback; every process the demo starts (or
its nodes started) is stopped by its pid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hanode.actuators.command import RunRecord
from hanode.cli.render import status_table
from hanode.devtools.procs import NodeProcess, free_port, http_request, node_config_toml

MODEL = "demo-llama-8b"
WORKERS = 4


@dataclass
class Traffic:
    """Background clients; counts which replica answered and what failed."""

    base_urls: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    served: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    total: int = 0
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(WORKERS):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def _run(self, worker: int) -> None:
        import openai

        clients: dict[str, openai.OpenAI] = {}
        deadline = time.monotonic() + 300  # bounded even if stop is never set
        n = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            n += 1
            with self.lock:
                url = self.base_urls[(worker + n) % len(self.base_urls)]
            client = clients.get(url)
            if client is None:
                client = clients[url] = openai.OpenAI(
                    base_url=url, api_key="demo", max_retries=0, timeout=20
                )
            try:
                raw = client.completions.with_raw_response.create(
                    model=MODEL, prompt=f"worker {worker} request {n}", max_tokens=8
                )
                replica = raw.headers.get("x-hanode-replica", "?")
                raw.parse()
                with self.lock:
                    self.served[replica] += 1
                    self.total += 1
            except openai.OpenAIError as exc:
                with self.lock:
                    self.errors[type(exc).__name__] += 1
                    self.total += 1
            time.sleep(0.02)

    def set_routers(self, base_urls: list[str]) -> None:
        """What a load balancer in front of the nodes does after its health check."""
        with self.lock:
            self.base_urls = list(base_urls)

    def take(self) -> tuple[Counter[str], Counter[str]]:
        with self.lock:
            served, errors = self.served, self.errors
            self.served, self.errors = Counter(), Counter()
        return served, errors

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=25)


def _say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def _shares(served: Counter[str], errors: Counter[str], names: list[str]) -> str:
    total = sum(served.values())
    parts = [f"{n}: {served.get(n, 0):4d} ({served.get(n, 0) / total:5.1%})" for n in names]
    failed = sum(errors.values())
    line = "traffic  " + "   ".join(parts) if total else "traffic: none"
    return line + f"   client errors: {failed}" + (f" {dict(errors)}" if failed else "")


def _wait(node: NodeProcess, predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate({r["name"]: r for r in node.status()["replicas"]}):
                return True
        except (OSError, RuntimeError, ValueError):
            pass
        time.sleep(0.2)
    return False


def _phase(traffic: Traffic, node: NodeProcess, seconds: float, names: list[str]) -> int:
    traffic.take()
    time.sleep(seconds)
    served, errors = traffic.take()
    print(status_table(node.status()))
    print(_shares(served, errors, names), flush=True)
    return sum(errors.values())


def _stream_once(base_url: str) -> None:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="demo", max_retries=0, timeout=20)
    t0 = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me about high availability."}],
        max_tokens=12,
        stream=True,
    )
    print("stream: ", end="", flush=True)
    first: float | None = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.monotonic() - t0
            print(chunk.choices[0].delta.content, end="", flush=True)
    total = time.monotonic() - t0
    print(f"\n(first token after {first or 0:.3f}s, whole stream {total:.3f}s)")


def _ctl(api_port: int, *args: str) -> None:
    """Run a hanodectl command against a node, as an operator would."""
    from hanode.cli.ctl import main as ctl_main

    print(f"$ hanodectl --endpoint 127.0.0.1:{api_port} {' '.join(args)}", flush=True)
    ctl_main(["--endpoint", f"127.0.0.1:{api_port}", *args])
    sys.stdout.flush()


NODES = ("node-1", "node-2", "node-3")
# replica -> (node, role)
REPLICAS = {
    "gpu-a": ("node-1", "active"),
    "gpu-b": ("node-2", "active"),
    "gpu-c": ("node-3", "active"),
    "gpu-d": ("node-3", "standby"),
}


# A cold start of a simulated replica (refused, then 503 while "loading"), and its wake from
# the engine's sleep mode: a restart takes longer than waking the standby, as on real GPUs.
SIM_LOAD_S = 5.0
SIM_WAKE_S = 1.0


class DemoCluster:
    """Three hanode nodes on loopback, each running its own simulated GPU replicas."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.sim_ports = {name: free_port() for name in REPLICAS}
        self.nodes: dict[str, NodeProcess] = {}
        self.configs: dict[str, Path] = {}
        self.api_ports: dict[str, int] = {}

    def sim_admin(self, name: str, path: str, body: Any) -> None:
        """POST /admin/<path> to a replica's simulator (its node runs it)."""
        url = f"http://127.0.0.1:{self.sim_ports[name]}/admin/{path}"
        status, _, text = http_request("POST", url, body, 5.0)
        if status != 200:
            raise RuntimeError(f"POST {url} -> {status}: {text!r}")

    def _replica(self, name: str, role: str) -> dict[str, Any]:
        command = [
            sys.executable, "-m", "hanode.sim", "--port", str(self.sim_ports[name]),
            "--model", MODEL, "--ttft-ms", "30", "--tpot-ms", "3",
            "--load-s", str(SIM_LOAD_S), "--wake-s", str(SIM_WAKE_S),
        ]  # fmt: skip
        return {
            "name": name,
            "model": MODEL,
            "url": f"http://127.0.0.1:{self.sim_ports[name]}",
            "role": role,
            "actuator": "command",
            "command": command,
            "standby": "sleep",
            "reload": "engine",  # a rolling reload: vLLM's /collective_rpc reload_weights
        }

    def write_configs(self) -> None:
        secret = self.workdir / "raft.secret"
        secret.write_text("demo-secret-" + "x" * 20 + "\n")
        secret.chmod(0o600)  # hanode refuses a secret file others can read
        raft = {n: f"127.0.0.1:{free_port()}" for n in NODES}
        for node in NODES:
            self.api_ports[node] = free_port()
            text = node_config_toml(
                name=node,
                data_dir=self.workdir / node,
                router_port=free_port(),
                metrics_port=free_port(),
                replicas=[self._replica(r, role) for r, (n, role) in REPLICAS.items() if n == node],
                sections={
                    "health": {
                        "interval_s": 0.3,
                        "timeout_s": 0.5,
                        "rise": 2,
                        "fall": 2,
                        "passive_window_s": 4.0,
                        "l2_interval_s": 2.0,
                        "l2_timeout_s": 1.0,
                        "slow_start_s": 3.0,  # also each reloaded replica's ramp
                    },
                    "recovery": {"poll_interval_s": 0.3, "backoff_base_s": 0.5},
                    "thresholds": {"ttft_ms": 300.0},
                    "cluster": {
                        "raft_listen": raft[node],
                        "peers": [raft[n] for n in NODES if n != node],
                        "secret_file": str(secret),
                        "election_min_s": 0.3,
                        "election_max_s": 0.9,
                        "planner_interval_s": 0.3,
                        "demote_hold_s": 10.0,
                    },
                    "api": {"listen": f"127.0.0.1:{self.api_ports[node]}"},
                },
                models=[{"name": MODEL, "min_active": 3, "redundancy": "n_plus_1"}],
            )
            self.configs[node] = self.workdir / f"{node}.toml"
            self.configs[node].write_text(text)

    def start_node(self, node: str) -> None:
        self.nodes[node] = NodeProcess(self.configs[node], log_path=self.workdir / f"{node}.log")

    def status(self, via: str) -> dict[str, Any]:
        return self.nodes[via].status()

    def routers(self) -> list[str]:
        return [p.router_url + "/v1" for p in self.nodes.values() if p.alive]

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        # A stopped node leaves its replicas running (the next one adopts them): stop each by
        # the pid its node recorded, checked against the process's start time.
        for name in NODES:
            for path in sorted((self.workdir / name / "replicas").glob("*.json")):
                record = RunRecord.from_json(path.read_bytes())
                if record is not None and record.alive():
                    with contextlib.suppress(OSError):
                        os.killpg(record.pid, signal.SIGKILL)


def run_demo(workdir: Path) -> int:
    cluster = DemoCluster(workdir)
    traffic: Traffic | None = None
    names = list(REPLICAS)
    failed = 0
    try:
        _say(
            "A three-node hanode cluster; each node starts its own simulated GPU replicas "
            "(gpu-d is a standby: it loads, then sleeps)"
        )
        cluster.write_configs()
        for node in NODES:
            cluster.start_node(node)
        print(f"configs and logs: {workdir}")
        watcher = cluster.nodes["node-1"]

        def ready(rs: dict[str, Any]) -> bool:
            doc = watcher.status()
            return (
                doc.get("leader") is not None
                and len(rs) == len(REPLICAS)
                and all(
                    r["health"] == "healthy" and r["weight"] > 0
                    for n, r in rs.items()
                    if n != "gpu-d"
                )
                and (rs["gpu-d"].get("process") or {}).get("observed") == "sleeping"
            )

        if not _wait(watcher, ready, 60):
            print("the cluster did not come up in 60 s; see the logs above")
            return 1
        _ctl(cluster.api_ports["node-1"], "status")

        _say("One streamed answer through node-2's front door")
        _stream_once(cluster.nodes["node-2"].router_url + "/v1")

        _say(f"Steady traffic: {WORKERS} clients spread over all three front doors")
        traffic = Traffic(cluster.routers())
        traffic.start()
        failed += _phase(traffic, watcher, 5, names)

        _say("gpu-b turns slow (time to first token 30 ms -> 450 ms): L3 lowers its weight")
        cluster.sim_admin("gpu-b", "config", {"ttft_ms": 450})
        _wait(watcher, lambda rs: rs["gpu-b"]["weight"] < 0.5, 15)
        failed += _phase(traffic, watcher, 6, names)

        _say(
            "gpu-c crashes: retries hide it; node-3 restarts it by itself while the leader "
            "wakes the sleeping standby gpu-d and promotes it (no hand restart)"
        )
        cluster.sim_admin("gpu-c", "crash", {})
        _wait(watcher, lambda rs: rs["gpu-d"]["role"] == "active" and rs["gpu-d"]["weight"] > 0, 20)
        failed += _phase(traffic, watcher, 3, names)
        _ctl(cluster.api_ports["node-1"], "incidents", "--last", "1")
        mttr = _mttr(cluster.api_ports["node-1"])
        print(f"MTTR (detected -> capacity restored, from the incident's timeline): {mttr}")
        _wait(watcher, lambda rs: rs["gpu-c"]["health"] == "healthy", 30)

        leader = watcher.status().get("leader")
        if leader in cluster.nodes:
            _say(f"The leader ({leader}) is killed (SIGKILL); the load balancer stops using it")
            survivor = next(n for n in NODES if n != leader)
            traffic.set_routers(
                [p.router_url + "/v1" for n, p in cluster.nodes.items() if n != leader]
            )
            cluster.nodes[leader].kill()
            cluster.nodes[leader].wait_exit(10)
            watcher = cluster.nodes[survivor]
            _wait(watcher, lambda rs: watcher.status().get("leader") not in (None, leader), 15)
            failed += _phase(traffic, watcher, 5, names)
            _ctl(cluster.api_ports[survivor], "members")
            _say(f"{leader} restarts from its data dir and rejoins")
            cluster.start_node(leader)
            traffic.set_routers(cluster.routers())

        _say(
            "gpu-b recovers; gpu-c, restarted by its node, is back in rotation (its weight "
            "ramped up: slow start); after the hold, gpu-d is demoted and sleeps again"
        )
        cluster.sim_admin("gpu-b", "config", {"ttft_ms": 30})
        _wait(watcher, lambda rs: rs["gpu-c"]["health"] == "healthy", 20)
        _wait(watcher, lambda rs: rs["gpu-b"]["health"] == "healthy", 15)
        _wait(
            watcher,
            lambda rs: (
                rs["gpu-d"]["role"] == "standby"
                and (rs["gpu-d"].get("process") or {}).get("observed") == "sleeping"
            ),
            25,
        )
        failed += _phase(traffic, watcher, 3, names)

        _say(
            "A rolling reload under traffic: hanodectl reload --surge. The sleeping standby "
            "gpu-d is woken, reloaded and promoted first, then each replica in turn is drained "
            "(its requests in flight finish), reloads its weights in place, passes L2 and "
            "warm-up prompts and ramps back; never fewer than min_active = 3 serving"
        )
        api = cluster.api_ports[next(n for n in NODES if cluster.nodes[n].alive)]
        _ctl(api, "reload", MODEL, "--surge")
        fewest = _follow_rollout(api, 60.0)
        _ctl(api, "reload", "--status", MODEL)
        print(f"fewest serving replicas seen during the rollout: {fewest}")
        failed += _phase(traffic, watcher, 1, names)

        traffic.close()
        _say("What the cluster recorded")
        _ctl(cluster.api_ports[next(iter(n for n in NODES if cluster.nodes[n].alive))], "events")
        _say(f"Done: {traffic.total} requests, {failed} failed on the client side")
        return 0 if failed == 0 else 1
    finally:
        if traffic is not None:
            traffic.close()
        cluster.stop()


def _follow_rollout(api_port: int, timeout: float) -> int:
    """Poll the model's rollout until it is over (surge standby given back); the fewest
    serving replicas seen meanwhile."""
    from hanode.api.convert import pb, rollout_from_proto
    from hanode.cli.ctl import Client, Settings

    client = Client(Settings(f"127.0.0.1:{api_port}", None, 5.0))
    fewest = 99
    last = ""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            answer = client.call("ReloadStatus", pb.ReloadStatusRequest(model=MODEL))
            found = [rollout_from_proto(r) for r in answer.rollouts]
            if found:
                ro = found[-1]
                fewest = min(fewest, int(ro["serving"]))
                line = ", ".join(f"{r['name']} {r['step']}" for r in ro["replicas"])
                if line != last:
                    print(f"  {line}", flush=True)
                    last = line
                if ro["state"] != "running" and ro["surge_state"] not in ("woken", "promoted"):
                    break
            time.sleep(0.3)
    finally:
        client.close()
    return fewest


def _mttr(api_port: int) -> str:
    """The newest incident's MTTR, read back through hanodectl's own client."""
    from hanode.api.convert import incident_from_proto, pb
    from hanode.cli.ctl import Client, Settings

    client = Client(Settings(f"127.0.0.1:{api_port}", None, 5.0))
    try:
        answer = client.call("ListIncidents", pb.ListIncidentsRequest(last=1))
    finally:
        client.close()
    found = [incident_from_proto(i) for i in answer.incidents]
    if not found or found[-1]["mttr_s"] is None:
        return "not restored yet"
    return f"{found[-1]['mttr_s']:.2f} s ({found[-1]['id']})"


def main(args: argparse.Namespace) -> int:
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        return run_demo(workdir)
    with tempfile.TemporaryDirectory(prefix="hanode-demo-") as tmp:
        return run_demo(Path(tmp))
