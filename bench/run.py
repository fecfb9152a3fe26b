"""``make bench``: hanode vs a direct connection vs nginx over the same three simulators.

One run, from nothing: installs nginx-light and wrk if missing, starts three ``hanode sim``
replicas, a private nginx (round-robin, keep-alive upstreams) and one hanode node over them, and
measures, for each of direct / nginx / hanode:

* latency p50/p99 at concurrency 1 (wrk, POST /v1/completions, max_tokens 16),
* throughput at concurrency 64 (wrk) and the proxy's CPU time per request (/proc/PID/stat),
* first-chunk delay of a streamed chat completion (raw-socket client; sims at tpot 1 ms),

then profiles hanode under load with py-spy and kills one simulator under load (failover).
Results: a table on stdout and docs/benchmarks.md (overwritten).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cluster, load, report
from bench.nginx import Nginx
from bench.procs import (
    CLK_TCK,
    HOST,
    BenchError,
    Proc,
    ProcGroup,
    free_port,
    http_request,
    tail,
    wait_until,
)
from bench.profile import Profile, start_record
from bench.profile import load as load_profile
from bench.tools import ensure_tools

MODEL = "bench-model"
COMPLETION_BODY = json.dumps(
    {"model": MODEL, "prompt": "Say hello to the benchmark.", "max_tokens": 16},
    separators=(",", ":"),
)
STREAM_BODY = json.dumps(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "stream": True,
    },
    separators=(",", ":"),
)
TARGETS = ("direct", "nginx", "hanode")
REPO = Path(__file__).resolve().parent.parent


@dataclass(slots=True)
class Settings:
    duration_s: float = 9.0  # per target and measurement, split into ``rounds``
    rounds: int = 3
    warmup_s: float = 2.0
    stream_iterations: int = 2000
    stream_time_limit_s: float = 8.0
    failover_s: float = 10.0
    failover_kill_at_s: float = 3.0
    failover_concurrency: int = 8
    profile: bool = True
    install: bool = True
    cluster: bool = True  # the three-node cluster part (bench/cluster.py)
    only_cluster: bool = False
    output: Path = REPO / "docs" / "benchmarks.md"


@dataclass(slots=True)
class TargetResult:
    name: str
    port: int
    c1: load.WrkResult | None = None
    c64: load.WrkResult | None = None
    cpu_s: float | None = None
    stream: load.FirstChunkResult | None = None
    split_head: float | None = None  # share of responses whose head arrived alone

    @property
    def cpu_ms_per_request(self) -> float | None:
        if self.cpu_s is None or self.c64 is None or not self.c64.requests:
            return None
        return self.cpu_s * 1e3 / self.c64.requests


@dataclass(slots=True)
class RunResult:
    settings: Settings
    targets: dict[str, TargetResult] = field(default_factory=dict)
    profile: Profile | None = None
    profile_rps: float | None = None
    native_profile: Profile | None = None
    failover: load.FailoverResult | None = None
    failover_killed: str = ""
    failover_status: str = ""  # hanode's view of the replicas after the failover run
    notes: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)  # name -> fact, for the report
    elapsed_s: float = 0.0
    cluster: cluster.ClusterResult | None = None


def _python() -> str:
    return sys.executable


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU-seconds of the whole machine since boot, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def own_cpu() -> float:
    """CPU-seconds of this process and of every child (and their children) already reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def start_sim(group: ProcGroup, name: str, log_dir: Path) -> tuple[Proc, int]:
    argv = [
        _python(),
        "-m",
        "hanode",
        "sim",
        "--port",
        "0",
        "--model",
        MODEL,
        "--ttft-ms",
        "0",
        "--tpot-ms",
        "0",
        "--capacity",
        "1024",
    ]
    proc = group.start(Proc(name, argv, log_dir))
    event = proc.wait_event("listening", 20.0)
    return proc, int(event["port"])


NODE_TOML = """\
[node]
name = "bench"
data_dir = "{data_dir}"

[router]
listen = "{host}:{port}"

[metrics]
listen = "{host}:{metrics_port}"

[health]
interval_s = 1.0
"""

REPLICA_TOML = """
[[replicas]]
name = "{name}"
model = "{model}"
url = "http://{host}:{port}"
engine = "vllm"
"""


def start_node(group: ProcGroup, tmp: Path, sim_ports: list[int]) -> tuple[Proc, int, int]:
    data_dir = tmp / "node-data"
    data_dir.mkdir()
    text = NODE_TOML.format(
        data_dir=data_dir, host=HOST, port=free_port(), metrics_port=free_port()
    )
    for i, port in enumerate(sim_ports):
        text += REPLICA_TOML.format(name=f"sim{i}", model=MODEL, host=HOST, port=port)
    config = tmp / "hanode.toml"
    config.write_text(text)
    argv = [_python(), "-m", "hanode", "run", "--config", str(config), "--log-level", "info"]
    proc = group.start(Proc("hanode", argv, tmp))
    event = proc.wait_event("listening", 20.0)
    router_port, metrics_port = int(event["router_port"]), int(event["metrics_port"])

    def all_healthy() -> bool:
        status, body = http_request(metrics_port, "GET", "/status")
        doc = json.loads(body)
        reps = doc.get("replicas", [])
        return (
            status == 200
            and len(reps) == len(sim_ports)
            and all(r.get("health") == "healthy" for r in reps)
        )

    wait_until(all_healthy, 30.0, "all replicas healthy in hanode /status", 0.2)
    return proc, router_port, metrics_port


def set_sim_timing(ports: list[int], **settings: float) -> None:
    for port in ports:
        status, body = http_request(port, "POST", "/admin/config", json.dumps(settings).encode())
        if status != 200:
            raise BenchError(f"sim {port}: /admin/config {settings} -> {status} {body[:200]!r}")


def _say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def _wrk_summary(r: load.WrkResult) -> str:
    errs = f", errors {r.errors}" if r.errors else ""
    return f"{r.rps:,.0f} req/s, p50 {r.p50_us:.0f} us, p99 {r.p99_us:.0f} us{errs}"


def measure(settings: Settings) -> RunResult:
    result = RunResult(settings)
    t_begin = time.monotonic()
    tools = ensure_tools(settings.install)
    venv_spy = Path(_python()).with_name("py-spy")
    py_spy = str(venv_spy) if venv_spy.exists() else (shutil.which("py-spy") or str(venv_spy))
    result.machine = report.machine_info(tools.nginx, tools.wrk, py_spy)
    busy0, steal0 = machine_cpu()
    own0, wall0 = own_cpu(), time.monotonic()
    result.machine["load average at start"] = f"{os.getloadavg()[0]:.2f}"
    with tempfile.TemporaryDirectory(prefix="hanode-bench-") as tmp_name, ProcGroup() as group:
        tmp = Path(tmp_name)
        sims: list[tuple[Proc, int]] = [start_sim(group, f"sim{i}", tmp) for i in range(3)]
        sim_ports = [port for _, port in sims]
        _say(f"simulators on ports {sim_ports} (pids {[p.pid for p, _ in sims]})")
        nginx = Nginx(tools.nginx, tmp / "nginx", free_port(), sim_ports)
        nginx.start(group)
        _say(f"nginx on port {nginx.port} (pids {nginx.pids()})")
        node, router_port, metrics_port = start_node(group, tmp, sim_ports)
        _say(f"hanode on port {router_port} (pid {node.pid}), all replicas healthy")
        for proc, _ in sims:
            if "falling back to asyncio" in tail(proc.err_path, 50):
                result.notes.append(f"{proc.name} ran on plain asyncio (uvloop self-test failed).")

        sim0 = sims[0][0]
        cpu_of: dict[str, Callable[[], float]] = {
            "direct": sim0.cpu_seconds,
            "nginx": nginx.cpu_seconds,
            "hanode": node.cpu_seconds,
        }
        ports = {"direct": sim_ports[0], "nginx": nginx.port, "hanode": router_port}
        for name in TARGETS:
            result.targets[name] = TargetResult(name, ports[name])
        script = load.write_lua(tmp / "post.lua", COMPLETION_BODY)

        def url(name: str) -> str:
            return f"http://{HOST}:{ports[name]}/v1/completions"

        # Warm-up: connections, code paths, upstream keep-alive pools.
        for name in TARGETS:
            r = load.run_wrk(tools.wrk, url(name), script, 64, settings.warmup_s)
            _say(f"warm-up {name}: {_wrk_summary(r)}")

        # Rounds interleave the targets so a burst of background load hits all of them alike.
        rounds = settings.rounds
        per_round = max(1.0, round(settings.duration_s / rounds))
        c1: dict[str, list[load.WrkResult]] = {name: [] for name in TARGETS}
        for i in range(rounds):
            for name in TARGETS:
                r = load.run_wrk(tools.wrk, url(name), script, 1, per_round)
                c1[name].append(r)
                _say(f"c=1 round {i + 1} {name}: {_wrk_summary(r)}")
        for name in TARGETS:
            result.targets[name].c1 = load.combine(c1[name])
            share = load.split_head_share(
                ports[name], "/v1/completions", COMPLETION_BODY.encode(), 1000
            )
            result.targets[name].split_head = share
            _say(f"framing {name}: {share:.0%} of responses had their head read without body")

        c64: dict[str, list[load.WrkResult]] = {name: [] for name in TARGETS}
        cpu: dict[str, float] = dict.fromkeys(TARGETS, 0.0)
        for i in range(rounds):
            for name in TARGETS:
                cpu0 = cpu_of[name]()
                r = load.run_wrk(tools.wrk, url(name), script, 64, per_round)
                used = cpu_of[name]() - cpu0
                cpu[name] += used
                c64[name].append(r)
                per = used * 1e3 / r.requests if r.requests else float("nan")
                _say(f"c=64 round {i + 1} {name}: {_wrk_summary(r)}, CPU {per:.4f} ms/request")
        for name in TARGETS:
            result.targets[name].c64 = load.combine(c64[name])
            result.targets[name].cpu_s = cpu[name]

        if settings.profile:
            result.profile, result.profile_rps = profile_node(
                py_spy, node.pid, tools.wrk, url("hanode"), script, tmp, settings.duration_s
            )
            result.native_profile, _ = profile_node(
                py_spy, node.pid, tools.wrk, url("hanode"), script, tmp, 5.0, native=True
            )

        # Streams: same simulators, now 1 ms per output token.
        set_sim_timing(sim_ports, ttft_ms=0, tpot_ms=1)
        streams: dict[str, list[load.FirstChunkResult]] = {name: [] for name in TARGETS}
        for _ in range(rounds):
            for name in TARGETS:
                streams[name].append(
                    load.first_chunk_delays(
                        ports[name],
                        "/v1/chat/completions",
                        STREAM_BODY.encode(),
                        settings.stream_iterations // rounds,
                        settings.stream_time_limit_s / rounds,
                    )
                )
        for name in TARGETS:
            fc = load.FirstChunkResult.merge(streams[name])
            result.targets[name].stream = fc
            _say(
                f"stream {name}: first chunk p50 {fc.p50_us:.0f} us, p99 {fc.p99_us:.0f} us "
                f"({len(fc.samples_us)} streams, {fc.errors} errors)"
            )

        # Failover: kill one simulator (ours, by pid) under load through hanode.
        victim = sims[2][0]
        result.failover_killed = victim.name
        fo = load.run_failover(
            router_port,
            "/v1/completions",
            COMPLETION_BODY.encode(),
            settings.failover_concurrency,
            settings.failover_s,
            settings.failover_kill_at_s,
            lambda: victim.signal(signal.SIGKILL),
        )
        result.failover = fo
        result.failover_status = replica_states(metrics_port)
        errs = fo.errors()
        _say(
            f"failover: {len(fo.samples)} requests, {sum(errs.values())} errors {dict(errs)}, "
            f"killed {victim.name} at {fo.kill_at:.2f}s"
        )
        check_node_log(node, result)
        for t in result.targets.values():
            wrk_errors = [w.errors for w in (t.c1, t.c64) if w is not None and w.errors]
            stream_errors = t.stream.errors if t.stream else 0
            if wrk_errors or stream_errors:
                result.notes.append(
                    f"{t.name}: wrk errors {wrk_errors or 'none'}, stream errors {stream_errors}."
                )
    if settings.cluster:
        _say("cluster: three nodes in one Raft cluster (bench/cluster.py)")
        result.cluster = cluster.run()
    # All our processes are reaped now, so their CPU is in own_cpu(): the rest was someone else.
    busy1, steal1 = machine_cpu()
    wall = time.monotonic() - wall0
    foreign = max(0.0, (busy1 - busy0) - (own_cpu() - own0))
    share = foreign / (wall * (os.cpu_count() or 1))
    result.machine["background load"] = (
        f"other processes used {foreign:.1f} CPU-s during the {wall:.0f} s run "
        f"({share:.0%} of the machine); hypervisor steal {steal1 - steal0:.1f} s"
    )
    if share > 0.05:
        result.notes.append(
            f"Other processes used {share:.0%} of the machine's CPU during the run: absolute "
            "numbers are noisier than on an idle machine; compare the ratios."
        )
    result.elapsed_s = time.monotonic() - t_begin
    return result


def profile_node(
    py_spy: str,
    pid: int,
    wrk: str,
    url: str,
    script: Path,
    tmp: Path,
    duration_s: float,
    native: bool = False,
) -> tuple[Profile, float | None]:
    """py-spy on the hanode process during a c=64 wrk run of ``duration_s``."""
    if not Path(py_spy).exists():
        return Profile(error=f"py-spy not found ({py_spy})"), None
    out = tmp / f"hanode-profile{'-native' if native else ''}.txt"
    seconds = max(2, round(duration_s) - 1)
    spy = start_record(py_spy, pid, seconds, out, native=native)
    rps: float | None = None
    try:
        time.sleep(0.5)  # let py-spy attach before the load starts
        r = load.run_wrk(wrk, url, script, 64, duration_s)
        rps = r.rps
        spy.wait(duration_s + 30)
    finally:
        if spy.poll() is None:
            spy.terminate()
            spy.wait(10)
    prof = load_profile(out)
    detail = f" ({prof.error})" if prof.error else ""
    _say(f"profile{' (native)' if native else ''}: {prof.total} samples{detail}")
    return prof, rps


def replica_states(metrics_port: int) -> str:
    """``name: health/breaker`` of every replica from hanode's /status."""
    try:
        status, body = http_request(metrics_port, "GET", "/status")
        doc = json.loads(body) if status == 200 else {}
    except (OSError, ValueError) as exc:
        return f"/status unavailable ({exc})"
    parts = []
    for rep in doc.get("replicas", []):
        breaker = rep.get("breaker", {})
        state = breaker.get("state", "?") if isinstance(breaker, dict) else breaker
        parts.append(f"{rep.get('name')}: {rep.get('health')}, breaker {state}")
    return "; ".join(parts)


def check_node_log(node: Proc, result: RunResult) -> None:
    """Surface hanode's own complaints (errors, warnings) in the report."""
    counts: dict[str, int] = {}
    total = 0
    for path in (node.out_path, node.err_path):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            total += 1
            try:
                doc: Any = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("level") in ("warning", "error", "critical"):
                key = f"{doc.get('level')}: {doc.get('event')}"
                counts[key] = counts.get(key, 0) + 1
    size = node.err_path.stat().st_size + node.out_path.stat().st_size
    result.machine["hanode_log"] = f"{total} lines, {size} bytes over the whole run"
    if counts:
        listed = ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
        result.notes.append(f"hanode logged: {listed}.")


def parse_args(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument(
        "--duration", type=float, default=9.0, help="seconds per target and wrk measurement"
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    p.add_argument("--stream-iterations", type=int, default=2000)
    p.add_argument("--failover-seconds", type=float, default=10.0)
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    p.add_argument("--no-install", action="store_true", help="never apt-get install")
    p.add_argument("--no-cluster", action="store_true", help="skip the three-node cluster part")
    p.add_argument(
        "--only-cluster",
        action="store_true",
        help="run only the cluster part and print it (docs/benchmarks.md is left alone)",
    )
    p.add_argument("--output", type=Path, default=Settings().output, help="markdown report")
    a = p.parse_args(argv)
    return Settings(
        duration_s=a.duration,
        rounds=max(1, a.rounds),
        warmup_s=a.warmup,
        stream_iterations=a.stream_iterations,
        stream_time_limit_s=max(2.0, a.duration),
        failover_s=a.failover_seconds,
        failover_kill_at_s=min(3.0, a.failover_seconds / 3),
        profile=not a.no_profile,
        install=not a.no_install,
        output=a.output,
        cluster=not a.no_cluster,
        only_cluster=a.only_cluster,
    )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)  # SystemExit unwinds the with/finally blocks that stop our processes


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if settings.only_cluster:
        only = cluster.run()
        print()
        print(cluster.render(only))
        print()
        print(cluster.summary(only))
        return 1 if only.error else 0
    try:
        result = measure(settings)
    except BenchError as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    text = report.render(result)
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(text)
    print()
    print(report.render_summary(result))
    print(f"\nbench: wrote {settings.output} ({result.elapsed_s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
