"""The cluster part of ``make bench``: three ``hanode run`` nodes in a Raft cluster on loopback.

Each node has two simulators of its own; every port (router, ops, gRPC API, Raft) is chosen
once and written into the node's config, so a killed node comes back on the same addresses.
Measured, in this order (each on the same cluster):

1. **consensus write rate**: Raft commit-index delta per second and per replica, with the
   cluster idle and then under light traffic through every router; the commands of the window
   are read back from the leader's Raft journal for a breakdown (op, and for ``observe`` which
   field of the observation changed);
2. **breaker propagation**: a simulator fails every request with a GPU OOM (``oom_trip_count``
   1), traffic goes through one node (the origin) until its breaker opens, and the ops
   ``/status`` of all three nodes is polled (~5 ms) to see when the other routers show it open;
   the cluster event log gives the same moments from each node's own clock (same machine);
3. **leader failover**: SIGKILL the leader's hanode process (ours, by pid), poll the
   survivors' ``/status`` (~10 ms) until both name the same new leader, restart the killed node
   on the same config and wait until it has caught up.

Everything is stopped by pid when it ends (:class:`bench.procs.ProcGroup`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import statistics
import struct
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import percentile
from bench.procs import HOST, BenchError, Proc, ProcGroup, free_port

MODEL = "bench-model"
SECRET = "bench-cluster-secret-0123456789abcdef"
BODY = json.dumps(
    {"model": MODEL, "prompt": "Say hello to the cluster.", "max_tokens": 8},
    separators=(",", ":"),
).encode()
# Simulators: 10 ms to the first token, 2 ms per token (a request takes ~25 ms).
SIM_ARGS = ("--ttft-ms", "10", "--tpot-ms", "2", "--capacity", "64")
OBS_FIELDS = (
    "level",
    "gpu_mem_frac",
    "kv_usage",
    "queue_depth",
    "running",
    "latency_ms",
    "ttft_ms",
    "gpu_removed",
    "reason",
)


@dataclass(slots=True)
class ClusterSettings:
    nodes: int = 3
    replicas_per_node: int = 2
    settle_s: float = 3.0  # after every replica is healthy, before the idle window
    idle_s: float = 20.0
    traffic_s: float = 20.0
    traffic_rps_per_router: float = 4.0
    breaker_iterations: int = 16
    breaker_poll_s: float = 0.005
    failover_iterations: int = 5
    leader_poll_s: float = 0.01
    # hanode settings of the cluster (production defaults except the breaker's)
    election_min_s: float = 0.4
    election_max_s: float = 1.4
    heartbeat_s: float = 10.0
    planner_interval_s: float = 1.0
    health_interval_s: float = 1.0
    oom_trip_count: int = 1
    open_base_s: float = 30.0  # long enough that no breaker half-opens during an iteration


@dataclass(slots=True)
class WriteWindow:
    label: str
    duration_s: float
    commits: int
    replicas: int
    requests: int = 0
    request_errors: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    observe_reasons: Counter[str] = field(default_factory=Counter)
    by_node: Counter[str] = field(default_factory=Counter)
    parsed: int = 0  # journal entries found for the window

    @property
    def per_s(self) -> float:
        return self.commits / self.duration_s if self.duration_s else float("nan")

    @property
    def per_replica_s(self) -> float:
        return self.per_s / self.replicas if self.replicas else float("nan")


@dataclass(slots=True)
class PropagationSample:
    origin: str
    replica: str
    origin_is_leader: bool
    requests: int  # requests sent through the origin until its breaker opened
    polled_ms: dict[str, float] = field(default_factory=dict)  # peer -> delay, polled
    event_ms: dict[str, float] = field(default_factory=dict)  # peer -> delay, event clocks
    poll_gap_ms: float = float("nan")  # median time between two polls of one node


@dataclass(slots=True)
class FailoverSample:
    killed: str
    new_leader: str
    agreed_s: float  # kill -> both survivors name the same new leader
    first_change_s: float  # kill -> the first survivor stops naming the killed node
    planner_s: float | None  # kill -> the new leader's "is the leader" event (planner running)
    listening_s: float  # restart -> listening line
    caught_up_s: float  # restart -> follows the leader with its commit index


@dataclass(slots=True)
class ClusterResult:
    settings: ClusterSettings
    windows: list[WriteWindow] = field(default_factory=list)
    propagation: list[PropagationSample] = field(default_factory=list)
    failovers: list[FailoverSample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    elapsed_s: float = 0.0


def _say(msg: str) -> None:
    print(f"bench: cluster: {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# small clients
# --------------------------------------------------------------------------------------------


class Http:
    """One keep-alive loopback HTTP connection (one per thread); reconnects once on error."""

    def __init__(self, port: int, timeout_s: float = 2.0) -> None:
        self.port = port
        self.timeout_s = timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout_s)
            try:
                headers = {"content-type": "application/json"} if body is not None else {}
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise BenchError(f"GET :{self.port}{path} -> {status}: {body[:200]!r}")
        return json.loads(body)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def breaker_state(doc: dict[str, Any], replica: str) -> str:
    for rep in doc.get("replicas", []):
        if rep.get("name") == replica:
            breaker = rep.get("breaker", {})
            return str(breaker.get("state", "?")) if isinstance(breaker, dict) else str(breaker)
    return "missing"


def poll_until(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float) -> Any:
    """Call ``check`` until it returns something truthy; errors count as "not yet"."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError, BenchError) as exc:
            last = exc
        time.sleep(interval_s)
    extra = f" (last error: {last!r})" if last is not None else ""
    raise BenchError(f"cluster: timed out after {timeout_s:g}s waiting for {what}{extra}")


# --------------------------------------------------------------------------------------------
# the cluster
# --------------------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    tmp: Path
    replicas: list[str]
    raft_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    router_port: int = field(default_factory=free_port)
    ops_port: int = field(default_factory=free_port)
    proc: Proc | None = None
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

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = Http(self.ops_port).get_json("/status")
        return doc

    def spawn(self, group: ProcGroup) -> Proc:
        self.starts += 1
        argv = [sys.executable, "-m", "hanode", "run", "--config", str(self.config)]
        argv += ["--log-level", "info"]
        self.proc = group.start(Proc(f"{self.name}-run{self.starts}", argv, self.tmp))
        return self.proc

    def wait_listening(self, timeout_s: float = 30.0) -> None:
        assert self.proc is not None
        event = self.proc.wait_event("listening", timeout_s)
        if int(event.get("router_port", 0)) != self.router_port:
            raise BenchError(f"{self.name}: unexpected listening line {event}")


class Cluster:
    def __init__(self, settings: ClusterSettings, group: ProcGroup, tmp: Path) -> None:
        self.s = settings
        self.group = group
        self.tmp = tmp
        self.secret = tmp / "raft.secret"
        self.secret.write_text(SECRET + "\n")
        self.secret.chmod(0o600)
        self.nodes = [
            Node(f"n{i + 1}", tmp, [f"n{i + 1}r{j}" for j in range(settings.replicas_per_node)])
            for i in range(settings.nodes)
        ]
        self.sim_ports: dict[str, int] = {}
        self._grpc: dict[str, Any] = {}

    @property
    def replicas(self) -> list[str]:
        return [r for n in self.nodes for r in n.replicas]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        from hanode.devtools.procs import node_config_toml

        sims: list[tuple[str, Proc]] = []
        for name in self.replicas:
            argv = [sys.executable, "-m", "hanode", "sim", "--port", "0", "--model", MODEL]
            proc = self.group.start(Proc(f"sim-{name}", [*argv, *SIM_ARGS], self.tmp))
            sims.append((name, proc))
        for name, proc in sims:
            self.sim_ports[name] = int(proc.wait_event("listening", 20.0)["port"])
        s = self.s
        for node in self.nodes:
            sections: dict[str, dict[str, Any]] = {
                "health": {"interval_s": s.health_interval_s},
                "breaker": {"oom_trip_count": s.oom_trip_count, "open_base_s": s.open_base_s},
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
            replicas = [
                {
                    "name": r,
                    "model": MODEL,
                    "url": f"http://{HOST}:{self.sim_ports[r]}",
                    "engine": "vllm",
                }
                for r in node.replicas
            ]
            node.config.write_text(
                node_config_toml(
                    name=node.name,
                    data_dir=node.data_dir,
                    router_port=node.router_port,
                    metrics_port=node.ops_port,
                    replicas=replicas,
                    sections=sections,
                )
            )
        for node in self.nodes:
            node.spawn(self.group)
        for node in self.nodes:
            node.wait_listening()
        self.wait_serving(60.0)

    def wait_serving(self, timeout_s: float) -> str:
        leader = self.wait_leader(self.nodes, timeout_s)
        want = set(self.replicas)

        def serving() -> bool:
            for node in self.nodes:
                reps = {r["name"]: r for r in node.status()["replicas"]}
                if set(reps) != want:
                    return False
                for r in reps.values():
                    if r["health"] != "healthy" or r["weight"] <= 0:
                        return False
            return True

        poll_until(serving, timeout_s, "every replica healthy and routable on every node", 0.1)
        return leader

    def leaders(self, nodes: Sequence[Node]) -> list[str | None]:
        return [n.status().get("leader") for n in nodes]

    def wait_leader(self, nodes: Sequence[Node], timeout_s: float, exclude: str = "") -> str:
        def agreed() -> str | None:
            seen = self.leaders(nodes)
            first = seen[0]
            if first and first != exclude and all(x == first for x in seen):
                return first
            return None

        leader: str = poll_until(agreed, timeout_s, "one leader named by every node", 0.05)
        return leader

    def reset_breaker(self, node: Node, replica: str) -> None:
        import grpc

        from hanode._proto.hanode.v1 import control_pb2 as pb
        from hanode._proto.hanode.v1 import control_pb2_grpc

        stub = self._grpc.get(node.name)
        if stub is None:
            channel = grpc.insecure_channel(f"{HOST}:{node.api_port}")
            stub = self._grpc[node.name] = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
        stub.ResetBreaker(pb.ReplicaRequest(replica=replica), timeout=5.0)

    def sim_faults(self, replica: str, faults: dict[str, Any]) -> None:
        status, body = Http(self.sim_ports[replica]).request(
            "POST", "/admin/faults", json.dumps(faults).encode()
        )
        if status != 200:
            raise BenchError(f"sim {replica}: /admin/faults {faults} -> {status} {body[:200]!r}")

    def events(self, node: Node, after: int = 0) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = Http(node.ops_port).get_json(f"/events?after={after}")[
            "events"
        ]
        return events

    def last_seq(self, node: Node) -> int:
        return max((int(e["seq"]) for e in self.events(node)), default=0)


# --------------------------------------------------------------------------------------------
# 1. consensus write rate
# --------------------------------------------------------------------------------------------


def read_journal(path: Path) -> list[tuple[int, bytes]]:
    """(index, command bytes) of every entry in a pysyncobj journal file (format version 1)."""
    data = path.read_bytes()
    first = 24 + 8 + 4 + 4  # app name, app version, format version, last record offset
    if len(data) < first:
        return []
    last = struct.unpack_from("<I", data, first - 4)[0]
    out: list[tuple[int, bytes]] = []
    offset = first
    while offset + 4 <= min(last, len(data)):
        size = struct.unpack_from("<I", data, offset)[0]
        if size < 16 or offset + 4 + size > len(data):
            break
        record = data[offset + 4 : offset + 4 + size]
        idx = struct.unpack_from("<Q", record, 0)[0]
        out.append((idx, record[16:]))
        offset += size + 8
    return out


class JournalTap:
    """Reads a journal every ``interval_s`` and keeps every entry seen: pysyncobj compacts its
    log (drops applied entries) at least every 60 s, so one read at the end can miss some."""

    def __init__(self, path: Path, interval_s: float = 0.25) -> None:
        self.path = path
        self.interval_s = interval_s
        self.entries: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> None:
        with contextlib.suppress(OSError, struct.error):
            for idx, raw in read_journal(self.path):
                self.entries.setdefault(idx, raw)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._read()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> JournalTap:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._read()

    def sorted(self) -> list[tuple[int, bytes]]:
        return sorted(self.entries.items())


_DECODER = json.JSONDecoder()


def command_of(raw: bytes) -> dict[str, Any] | None:
    """The hanode command (orjson bytes pickled inside the Raft entry), or None (Raft's own)."""
    start = raw.find(b'{"op":')
    if start < 0:
        return None
    try:
        doc, _ = _DECODER.raw_decode(raw[start:].decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def classify(window: WriteWindow, entries: list[tuple[int, bytes]], lo: int, hi: int) -> None:
    """Fill the window's breakdown from the journal entries with index in (lo, hi]."""
    last_obs: dict[str, dict[str, Any]] = {}
    for idx, raw in entries:
        cmd = command_of(raw)
        if idx <= lo:
            if cmd is not None and cmd.get("op") == "observe":
                last_obs[str(cmd.get("replica"))] = dict(cmd.get("obs", {}))
            continue
        if idx > hi:
            break
        window.parsed += 1
        if cmd is None:
            window.ops["(raft internal: no-op / membership)"] += 1
            continue
        op = str(cmd.get("op"))
        if op == "add_event":
            window.ops[f"add_event ({cmd.get('kind')})"] += 1
            node = cmd.get("fields", {}).get("node")
            window.by_node[str(node or "?")] += 1
            continue
        window.ops[op] += 1
        if op != "observe":
            continue
        replica = str(cmd.get("replica"))
        window.by_node[replica.split("r")[0] or "?"] += 1
        obs = dict(cmd.get("obs", {}))
        prev = last_obs.get(replica)
        last_obs[replica] = obs
        if prev is None:
            window.observe_reasons["first in journal"] += 1
            continue
        changed = [f for f in OBS_FIELDS if prev.get(f) != obs.get(f)]
        if not changed:
            window.observe_reasons["nothing changed (heartbeat)"] += 1
        for f in changed:
            window.observe_reasons[f"{f} changed"] += 1


def commit_index(node: Node) -> int:
    return int(node.status().get("freshness", {}).get("commit_index", 0))


def traffic(ports: Sequence[int], rps: float, stop: threading.Event, counts: Counter[str]) -> None:
    """One paced client per router port, ``rps`` requests per second each, until ``stop``."""

    def client(port: int) -> None:
        conn = Http(port, timeout_s=10.0)
        period = 1.0 / rps
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                status, _ = conn.request("POST", "/v1/completions", BODY)
                counts["ok" if status == 200 else f"http {status}"] += 1
            except (OSError, http.client.HTTPException) as exc:
                counts[type(exc).__name__] += 1
            next_at += period
            stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()

    threads = [threading.Thread(target=client, args=(p,), daemon=True) for p in ports]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(15.0)


def write_window(c: Cluster, label: str, duration_s: float, rps: float) -> WriteWindow:
    leader = c.node(c.wait_leader(c.nodes, 10.0))
    stop = threading.Event()
    counts: Counter[str] = Counter()
    runner: threading.Thread | None = None
    if rps > 0:
        ports = [n.router_port for n in c.nodes]
        runner = threading.Thread(target=traffic, args=(ports, rps, stop, counts), daemon=True)
        runner.start()
        time.sleep(2.0)  # let the traffic's effect on observations start before counting
    with JournalTap(leader.journal) as tap:
        ci0, t0 = commit_index(leader), time.monotonic()
        time.sleep(duration_s)
        ci1, t1 = commit_index(leader), time.monotonic()
    stop.set()
    if runner is not None:
        runner.join(20.0)
    window = WriteWindow(label, t1 - t0, ci1 - ci0, len(c.replicas))
    window.requests = sum(counts.values())
    window.request_errors = window.requests - counts["ok"]
    classify(window, tap.sorted(), ci0, ci1)
    return window


# --------------------------------------------------------------------------------------------
# 2. breaker propagation
# --------------------------------------------------------------------------------------------


def watch_breaker(
    port: int,
    replica: str,
    want: str,
    interval_s: float,
    deadline: float,
    out: dict[str, float],
    gaps: list[float],
    key: str,
) -> None:
    """Poll ``/status`` until ``replica``'s breaker is ``want``; ``out[key]`` = when it was seen."""
    conn = Http(port)
    prev: float | None = None
    try:
        while time.monotonic() < deadline:
            began = time.monotonic()
            try:
                doc = conn.get_json("/status")
            except (OSError, http.client.HTTPException, ValueError, BenchError):
                time.sleep(interval_s)
                continue
            done = time.monotonic()
            if prev is not None:
                gaps.append(done - prev)
            prev = done
            if breaker_state(doc, replica) == want:
                out[key] = done
                return
            time.sleep(max(0.0, interval_s - (time.monotonic() - began)))
    finally:
        conn.close()


def propagate_once(c: Cluster, i: int) -> PropagationSample:
    s = c.s
    origin = c.nodes[i % len(c.nodes)]
    replica = c.replicas[i % len(c.replicas)]
    peers = [n for n in c.nodes if n is not origin]
    leader = c.wait_leader(c.nodes, 10.0)
    seq0 = c.last_seq(origin)
    c.sim_faults(replica, {"oom": 1.0})
    seen: dict[str, float] = {}
    gaps: list[float] = []
    deadline = time.monotonic() + 8.0
    watchers = [
        threading.Thread(
            target=watch_breaker,
            args=(n.ops_port, replica, "open", s.breaker_poll_s, deadline, seen, gaps, n.name),
            daemon=True,
        )
        for n in c.nodes
    ]
    for w in watchers:
        w.start()
    time.sleep(0.05)  # the watchers' first polls (closed) before the first request
    conn = Http(origin.router_port, timeout_s=10.0)
    sent = 0
    try:
        while origin.name not in seen and time.monotonic() < deadline and sent < 500:
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn.request("POST", "/v1/completions", BODY)
            sent += 1
    finally:
        conn.close()
    for w in watchers:
        w.join(10.0)
    sample = PropagationSample(origin.name, replica, origin.name == leader, sent)
    if origin.name not in seen:
        raise BenchError(f"cluster: {origin.name}'s breaker for {replica} never opened")
    for n in peers:
        if n.name in seen:
            sample.polled_ms[n.name] = (seen[n.name] - seen[origin.name]) * 1e3
    sample.poll_gap_ms = statistics.median(gaps) * 1e3 if gaps else float("nan")

    # The same moments from the nodes' own clocks: each router's open transition is an event
    # ("breaker", to_state open) that the node writes to the replicated event log.
    def opened_by_all() -> dict[str, float] | None:
        ts: dict[str, float] = {}
        for e in c.events(origin, seq0):
            f = e.get("fields", {})
            node = str(f.get("node") or "")
            is_open = e.get("kind") == "breaker" and f.get("to_state") == "open"
            if is_open and e.get("subject") == replica and node and node not in ts:
                ts[node] = float(e["ts"])
        return ts if len(ts) == len(c.nodes) else None

    with contextlib.suppress(BenchError):
        ts = poll_until(opened_by_all, 5.0, "breaker events from every node", 0.05)
        for n in peers:
            sample.event_ms[n.name] = (ts[n.name] - ts[origin.name]) * 1e3

    # Back to normal: the simulator recovers, an operator reset closes the breaker everywhere.
    c.sim_faults(replica, {"clear": True})
    c.reset_breaker(origin, replica)

    def closed_everywhere() -> bool:
        return all(breaker_state(n.status(), replica) == "closed" for n in c.nodes)

    poll_until(closed_everywhere, 10.0, f"{replica}'s breaker closed on every node", 0.02)
    return sample


# --------------------------------------------------------------------------------------------
# 3. leader failover
# --------------------------------------------------------------------------------------------


def failover_once(c: Cluster) -> FailoverSample:
    s = c.s
    killed = c.node(c.wait_leader(c.nodes, 15.0))
    survivors = [n for n in c.nodes if n is not killed]
    conns = {n.name: Http(n.ops_port, timeout_s=1.0) for n in survivors}
    assert killed.proc is not None and killed.proc.popen is not None
    wall0 = time.time()
    t0 = time.monotonic()
    killed.proc.signal(signal.SIGKILL)
    new_leader = ""
    agreed_at = 0.0
    changed_at = 0.0
    try:
        deadline = t0 + 30.0
        while time.monotonic() < deadline:
            names: list[Any] = []
            for n in survivors:
                try:
                    names.append(conns[n.name].get_json("/status").get("leader"))
                except (OSError, http.client.HTTPException, ValueError, BenchError):
                    names.append(None)
            if not changed_at and any(x != killed.name for x in names):
                changed_at = time.monotonic()
            if names[0] and names[0] != killed.name and all(x == names[0] for x in names):
                agreed_at, new_leader = time.monotonic(), str(names[0])
                break
            time.sleep(s.leader_poll_s)
    finally:
        for conn in conns.values():
            conn.close()
    killed.proc.popen.wait(10.0)
    killed.proc.stop()
    if not new_leader:
        raise BenchError(f"cluster: no new leader within 30 s of killing {killed.name}")

    def planner_event() -> float | None:
        for e in c.events(c.node(new_leader)):
            mine = e.get("kind") == "leader" and e.get("subject") == new_leader
            if mine and float(e["ts"]) >= wall0:
                return float(e["ts"])
        return None

    planner_at: float | None = None
    with contextlib.suppress(BenchError):
        planner_at = poll_until(planner_event, 5.0, "the new leader's leader event", 0.02)

    # Restart the killed node on the same config (same ports, same data dir).
    t_restart = time.monotonic()
    killed.spawn(c.group)
    killed.wait_listening()
    listening_at = time.monotonic()
    leader_node = c.node(new_leader)

    def caught_up() -> bool:
        target = commit_index(leader_node)
        doc = killed.status()
        fresh = doc.get("freshness", {})
        return (
            doc.get("leader") == new_leader
            and bool(fresh.get("has_quorum"))
            and int(fresh.get("commit_index", 0)) >= target
        )

    poll_until(caught_up, 30.0, f"{killed.name} caught up with leader {new_leader}", 0.01)
    caught_up_at = time.monotonic()
    c.wait_serving(30.0)
    return FailoverSample(
        killed=killed.name,
        new_leader=new_leader,
        agreed_s=agreed_at - t0,
        first_change_s=changed_at - t0,
        planner_s=(planner_at - wall0) if planner_at is not None else None,
        listening_s=listening_at - t_restart,
        caught_up_s=caught_up_at - t_restart,
    )


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def warnings_in_logs(tmp: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in sorted(tmp.glob("n*-run*.out")) + sorted(tmp.glob("n*-run*.err")):
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                if "Traceback" in line:
                    counts["traceback"] += 1
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("level") in ("warning", "error", "critical"):
                counts[f"{doc.get('level')}: {doc.get('event')}"] += 1
    return counts


def run(settings: ClusterSettings | None = None) -> ClusterResult:
    """The whole cluster measurement; failures end up in ``result.error``, never raised."""
    s = settings or ClusterSettings()
    result = ClusterResult(s)
    t_begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hanode-bench-cluster-") as name, ProcGroup() as g:
        tmp = Path(name)
        c = Cluster(s, g, tmp)
        try:
            c.start()
            leader = c.wait_leader(c.nodes, 10.0)
            _say(
                f"{len(c.nodes)} nodes, {len(c.replicas)} replicas serving; leader {leader} "
                f"(pids {[n.proc.pid for n in c.nodes if n.proc]})"
            )
            time.sleep(s.settle_s)
            for label, seconds, rate in (
                ("idle", s.idle_s, 0.0),
                (
                    f"{s.traffic_rps_per_router:g} req/s through each router",
                    s.traffic_s,
                    s.traffic_rps_per_router,
                ),
            ):
                w = write_window(c, label, seconds, rate)
                result.windows.append(w)
                _say(
                    f"writes, {label}: {w.commits} commits in {w.duration_s:.1f} s = "
                    f"{w.per_s:.2f}/s, {w.per_replica_s:.3f}/s per replica "
                    f"({dict(w.ops.most_common())})"
                )
            leader_node = c.node(c.wait_leader(c.nodes, 10.0))
            with JournalTap(leader_node.journal) as tap:
                ci0, t0 = commit_index(leader_node), time.monotonic()
                for i in range(s.breaker_iterations):
                    p = propagate_once(c, i)
                    result.propagation.append(p)
                    polled = ", ".join(f"{k} {v:.1f}" for k, v in p.polled_ms.items())
                    events = ", ".join(f"{k} {v:.1f}" for k, v in p.event_ms.items())
                    _say(
                        f"breaker {i + 1}: {p.replica} opened by {p.origin}"
                        f"{' (leader)' if p.origin_is_leader else ''} after {p.requests} "
                        f"requests; seen open (ms): polled {polled or 'n/a'}; "
                        f"events {events or 'n/a'}"
                    )
                ci1, t1 = commit_index(leader_node), time.monotonic()
            if result.propagation:
                w = WriteWindow(
                    f"during the breaker runs ({len(result.propagation)} trips and resets)",
                    t1 - t0,
                    ci1 - ci0,
                    len(c.replicas),
                )
                w.requests = sum(p.requests for p in result.propagation)
                classify(w, tap.sorted(), ci0, ci1)
                result.windows.append(w)
            for i in range(s.failover_iterations):
                f = failover_once(c)
                result.failovers.append(f)
                planner = f"{f.planner_s:.2f} s" if f.planner_s is not None else "n/a"
                _say(
                    f"failover {i + 1}: killed {f.killed}, first survivor moved on after "
                    f"{f.first_change_s:.3f} s, {f.new_leader} agreed after "
                    f"{f.agreed_s:.3f} s (planner {planner}); restarted node listening after "
                    f"{f.listening_s:.2f} s, caught up after {f.caught_up_s:.2f} s"
                )
        except (BenchError, TimeoutError, OSError) as exc:
            result.error = str(exc)
            _say(f"failed: {exc}")
            for proc in g.procs:
                if proc.name.startswith("n") and not proc.alive():
                    result.notes.append(f"{proc.name} exited: {proc.describe_failure()[:800]}")
        except Exception as exc:  # a bug in the measurement must not lose the main results
            result.error = f"{type(exc).__name__}: {exc}"
            _say(f"failed: {result.error}")
        finally:
            g.stop_all()
            logged = warnings_in_logs(tmp)
            if logged:
                listed = ", ".join(f"{k} x{v}" for k, v in sorted(logged.items()))
                result.notes.append(f"hanode nodes logged: {listed}.")
    result.elapsed_s = time.monotonic() - t_begin
    return result


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _stats(values: Sequence[float]) -> tuple[float, float, float, float]:
    v = sorted(values)
    if not v:
        nan = float("nan")
        return nan, nan, nan, nan
    return percentile(v, 50), percentile(v, 99), v[-1], v[0]


def _fmt(x: float | None, digits: int = 1) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:.{digits}f}"


def propagation_rows(r: ClusterResult) -> list[str]:
    polled = [v for p in r.propagation for v in p.polled_ms.values()]
    events = [v for p in r.propagation for v in p.event_ms.values()]
    rows = []
    for label, vals in (("polled /status (ms)", polled), ("event timestamps (ms)", events)):
        p50, p99, mx, mn = _stats(vals)
        rows.append(
            f"| {label} | {len(vals)} | {_fmt(p50)} | {_fmt(p99)} | {_fmt(mx)} | {_fmt(mn)} |"
        )
    return rows


def split_by_origin(r: ClusterResult) -> str:
    parts = []
    for label, leader in (("origin is the leader", True), ("origin is a follower", False)):
        vals = sorted(
            v for p in r.propagation if p.origin_is_leader == leader for v in p.event_ms.values()
        )
        if vals:
            parts.append(
                f"{label}: p50 {percentile(vals, 50):.1f} ms, max {vals[-1]:.1f} ms "
                f"({len(vals)} samples)"
            )
    return "; ".join(parts)


def summary(r: ClusterResult) -> str:
    lines = [f"cluster ({r.settings.nodes} nodes, {r.elapsed_s:.0f} s):"]
    if r.propagation:
        polled = sorted(v for p in r.propagation for v in p.polled_ms.values())
        events = sorted(v for p in r.propagation for v in p.event_ms.values())
        lines.append(
            f"  breaker propagation p50/p99/max: polled {_fmt(percentile(polled, 50))}/"
            f"{_fmt(percentile(polled, 99))}/{_fmt(polled[-1] if polled else None)} ms, "
            f"events {_fmt(percentile(events, 50))}/{_fmt(percentile(events, 99))}/"
            f"{_fmt(events[-1] if events else None)} ms"
        )
    if r.failovers:
        agreed = sorted(f.agreed_s for f in r.failovers)
        lines.append(
            f"  leader failover p50/max: {percentile(agreed, 50):.3f}/{agreed[-1]:.3f} s "
            f"(election timeout {r.settings.election_min_s:g}-{r.settings.election_max_s:g} s)"
        )
    for w in r.windows:
        lines.append(
            f"  consensus writes, {w.label}: {w.per_s:.2f}/s, {w.per_replica_s:.3f}/s per replica"
        )
    if r.error:
        lines.append(f"  FAILED: {r.error}")
    return "\n".join(lines)


def render(r: ClusterResult) -> str:
    s = r.settings
    out: list[str] = []
    if r.error:
        out += [f"**The cluster run failed:** {r.error}", ""]
    out += [
        f"{s.nodes} `hanode run` nodes in one Raft cluster on loopback, {s.replicas_per_node} "
        f"simulators each ({s.nodes * s.replicas_per_node} replicas of one model); "
        f"{r.elapsed_s:.0f} s in all. Settings: `[cluster]` election_min_s {s.election_min_s:g}, "
        f"election_max_s {s.election_max_s:g}, heartbeat_s {s.heartbeat_s:g}, "
        f"planner_interval_s {s.planner_interval_s:g}; `[health]` interval_s "
        f"{s.health_interval_s:g}; `[breaker]` oom_trip_count {s.oom_trip_count}, open_base_s "
        f"{s.open_base_s:g} (everything else default).",
        "",
        "#### Breaker propagation (one router opens a breaker -> the other routers have it open)",
        "",
    ]
    if r.propagation:
        gap = statistics.median(p.poll_gap_ms for p in r.propagation)
        out += [
            f"{len(r.propagation)} breakers, 2 peers each "
            f"(origin rotates over the nodes, the failing replica over all replicas).",
            "",
            "| measured by | samples | p50 | p99 | max | min |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *propagation_rows(r),
            "",
            f"* Polled: ops `/status` of all three nodes polled by three threads every "
            f"{s.breaker_poll_s * 1e3:g} ms (median gap between two answers of one node "
            f"{gap:.1f} ms: that is the resolution); delay = first poll of a peer showing the "
            "breaker `open` minus the first poll of the origin showing it.",
            "* Event timestamps: the wall-clock `ts` of the `breaker ... -> open` events each "
            "node writes to the replicated event log (origin: its own transition; peers: the "
            "forced open when the replicated breaker was applied). All nodes share one clock; "
            "`ts` is taken when the node's write task starts, one event-loop turn after the "
            "transition, on every node alike.",
            f"* By origin (event timestamps): {split_by_origin(r) or 'n/a'}.",
            "* Reading: a breaker write reaches the leader, is replicated and committed, and the "
            "followers learn the commit with the next append-entries message; pysyncobj batches "
            "these (its default `appendEntriesUseBatch`, period "
            f"{min(0.1, s.election_min_s / 4):g} s here), so the delays come in steps of about "
            "one period (the leader as a peer applies first, the other follower one period "
            "later).",
            f"* Requests through the origin until its breaker opened: "
            f"{', '.join(str(p.requests) for p in r.propagation)}.",
        ]
    else:
        out.append("Not measured.")
    out += ["", "#### Leader failover (SIGKILL of the leader's hanode process)", ""]
    if r.failovers:
        agreed = sorted(f.agreed_s for f in r.failovers)
        first = sorted(f.first_change_s for f in r.failovers)
        planner = sorted(f.planner_s for f in r.failovers if f.planner_s is not None)
        listening = sorted(f.listening_s for f in r.failovers)
        caught = sorted(f.caught_up_s for f in r.failovers)
        out += [
            "| | p50 | max | runs |",
            "| --- | ---: | ---: | --- |",
            f"| kill -> both survivors name the same new leader (s) | "
            f"{percentile(agreed, 50):.3f} | {agreed[-1]:.3f} | "
            f"{', '.join(f'{x:.3f}' for x in [f.agreed_s for f in r.failovers])} |",
            f"| kill -> first survivor stops naming the dead leader (election timer ran out) (s) | "
            f"{percentile(first, 50):.3f} | {first[-1]:.3f} | "
            f"{', '.join(f'{x:.3f}' for x in [f.first_change_s for f in r.failovers])} |",
            f"| kill -> new leader's planner wrote its `leader` event (s) | "
            f"{_fmt(percentile(planner, 50), 3)} | {_fmt(planner[-1] if planner else None, 3)} | "
            f"{len(planner)} of {len(r.failovers)} seen |",
            f"| restart of the killed node -> listening (s) | {percentile(listening, 50):.2f} | "
            f"{listening[-1]:.2f} | |",
            f"| restart -> follows the leader, commit index caught up (s) | "
            f"{percentile(caught, 50):.2f} | {caught[-1]:.2f} | |",
            "",
            f"Killed -> new leader: {', '.join(f'{f.killed}->{f.new_leader}' for f in r.failovers)}"
            f". Survivors' ops `/status` polled every {s.leader_poll_s * 1e3:g} ms (`leader`); "
            f"election timeout {s.election_min_s:g}-{s.election_max_s:g} s (pysyncobj "
            f"raftMin/MaxTimeout, leaderFallbackTimeout {s.election_max_s:g} s, append-entries "
            f"period {min(0.1, s.election_min_s / 4):g} s). After each kill the node is "
            "restarted on the same config and the next run waits until every replica is "
            "healthy and routable on every node again.",
        ]
    else:
        out.append("Not measured.")
    out += ["", "#### Consensus writes the agents produce", ""]
    if r.windows:
        out += [
            "| window | seconds | commits | writes/s | writes/s per replica | client requests |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for w in r.windows:
            reqs = f"{w.requests} ({w.request_errors} errors)" if w.requests else "none"
            out.append(
                f"| {w.label} | {w.duration_s:.1f} | {w.commits} | {w.per_s:.2f} | "
                f"{w.per_replica_s:.3f} | {reqs} |"
            )
        out += ["", "Breakdown (commands of the window read back from the leader's Raft journal):"]
        out.append("")
        for w in r.windows:
            ops = ", ".join(f"{k} {v}" for k, v in w.ops.most_common()) or "none"
            why = ", ".join(f"{k} {v}" for k, v in w.observe_reasons.most_common()) or "none"
            nodes = ", ".join(f"{k} {v}" for k, v in sorted(w.by_node.items())) or "none"
            out.append(
                f"* **{w.label}** ({w.parsed} of {w.commits} entries found): {ops}. "
                f"`observe` sent because: {why}. Writes by node: {nodes}."
            )
        out += [
            "",
            f"Method: the leader's Raft commit index (ops `/status` `freshness.commit_index`) "
            f"before and after the window; writes/s per replica = delta / seconds / "
            f"{r.windows[0].replicas} replicas. The traffic window paces "
            f"{s.traffic_rps_per_router:g} requests/s (completions, max_tokens 8, simulators "
            f"ttft 10 ms, tpot 2 ms) through each of the {s.nodes} routers, started 2 s before "
            f"the window. An `observe` reason lists every observation field that differs from "
            f"the replica's previous `observe` in the log (agent hysteresis: level, GPU 0.02, "
            f"KV 0.05, queue 2 and 25 %, latency/TTFT 20 % relative; heartbeat "
            f"{s.heartbeat_s:g} s).",
        ]
    else:
        out.append("Not measured.")
    if r.notes:
        out += ["", *(f"* {n}" for n in r.notes)]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.cluster``: the cluster part alone, printed (docs untouched)."""
    del argv
    result = run()
    print()
    print(render(result))
    print()
    print(summary(result))
    return 1 if result.error else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
