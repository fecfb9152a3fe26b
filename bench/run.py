"""``make bench``: hanode vs a direct connection vs nginx over the same three simulators.

One run, from nothing: installs nginx-light and wrk if missing, starts three ``hanode sim``
replicas, a private nginx (round-robin, keep-alive upstreams) and one hanode node over them
(:mod:`bench.targets`), and measures, for each of direct / nginx / hanode:

* latency p50/p99 at concurrency 1, throughput at concurrency 64 and the proxy's CPU time per
  request (:mod:`bench.overhead`, wrk),
* first-chunk delay of a streamed chat completion (:mod:`bench.streaming`),

and the same against the LLM routers (:mod:`bench.routers`): vllm-router and LiteLLM's proxy
from cached venvs and hanode with ``[router] workers`` 1, 2 and "auto" join the targets above,
a streaming relay run (64 streams of 200 chunks, :mod:`bench.stream_relay`), a proxy-limited
run over a canned upstream (:mod:`bench.proxy_limited`) and a failover run per target
(:mod:`bench.failover_targets`); ``--only-routers`` runs just these, ``--no-routers`` leaves
them out;

then profiles hanode under load with py-spy (:mod:`bench.profile`), kills one simulator under
load (:mod:`bench.replica_failover`), overloads one node with and without admission control
(:mod:`bench.overload`), runs the cluster part (:mod:`bench.cluster`: seven nodes, three with
``--quick``) and the in-process cluster scale part (:mod:`bench.scale`: 8, 64, 512 replicas).
Results: a table on stdout and docs/benchmarks.md (overwritten; never by ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import (
    overhead,
    overload,
    recovery,
    replica_failover,
    report,
    routers,
    scale,
    scale_report,
    stream_continuation,
    stream_relay,
    streaming,
    targets,
    wrk,
)
from bench.cluster import QUICK as QUICK_CLUSTER
from bench.cluster import ClusterResult, ClusterSettings
from bench.cluster import run as run_cluster
from bench.cluster.report import render as render_cluster
from bench.cluster.report import summary as cluster_summary
from bench.harness import BenchError, ProcGroup, log_complaints, machine_cpu, own_cpu, say
from bench.machine import machine_info
from bench.profile import Profile, profile_node
from bench.tools import ensure_tools

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
    cluster: bool = True  # the cluster part (bench/cluster/) and the scale part (bench/scale.py)
    only_cluster: bool = False
    cluster_settings: ClusterSettings = field(default_factory=ClusterSettings)
    scale_settings: scale.ScaleSettings = field(default_factory=scale.ScaleSettings)
    # streams through a replica's death, continuation off and on (bench/stream_continuation.py)
    continuation: stream_continuation.ContinuationSettings = field(
        default_factory=stream_continuation.ContinuationSettings
    )
    # MTTR of a crash: restart by the node, and a sleeping standby's takeover (bench/recovery.py)
    recovery: recovery.RecoverySettings = field(default_factory=recovery.RecoverySettings)
    # demand twice the capacity, admission off and on (bench/overload.py)
    overload: overload.OverloadSettings = field(default_factory=overload.OverloadSettings)
    # vllm-router and LiteLLM next to nginx and hanode, workers 1/2/auto (bench/routers.py)
    routers: routers.RoutersSettings = field(default_factory=routers.RoutersSettings)
    only_routers: bool = False  # the single-node setup and the router parts only
    output: Path | None = REPO / "docs" / "benchmarks.md"  # None: print only


@dataclass(slots=True)
class RunResult:
    settings: Settings
    targets: dict[str, overhead.TargetResult] = field(default_factory=dict)
    profile: Profile | None = None
    profile_rps: float | None = None
    native_profile: Profile | None = None
    failover: replica_failover.FailoverResult | None = None
    notes: list[str] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)  # name -> fact, for the report
    elapsed_s: float = 0.0
    cluster: ClusterResult | None = None
    scale: scale.ScaleResult | None = None
    continuation: stream_continuation.ContinuationResult | None = None
    recovery: recovery.RecoveryResult | None = None
    overload: overload.OverloadResult | None = None
    routers: routers.RoutersResult | None = None


def single_node(
    settings: Settings, result: RunResult, tmp: Path, nginx: str, wrk_bin: str, py_spy: str
) -> None:
    """Every measurement of the single-node setup, one after the other on the same processes."""
    with ProcGroup(tmp) as group:
        extras = result.routers.extras if result.routers else None
        t = targets.start(group, tmp, nginx, extras)
        if result.routers is not None:
            result.routers.skipped.update(t.skipped)
            for name, reason in t.skipped.items():
                say(f"{name}: left out: {reason}")
        for i, sim in enumerate(t.sims):
            if "falling back to asyncio" in sim.output():
                result.notes.append(f"sim{i} ran on plain asyncio (uvloop self-test failed).")
        for name in t.names:
            result.targets[name] = overhead.TargetResult(name, t.ports[name])
        scripts = {
            name: wrk.write_lua(
                tmp / f"post-{name}.lua", overhead.COMPLETION_BODY, t.headers_of(name)
            )
            for name in t.names
        }
        script = scripts["hanode"]
        per_round = max(1.0, round(settings.duration_s / settings.rounds))
        overhead.measure(
            t, result.targets, wrk_bin, scripts, settings.rounds, per_round, settings.warmup_s
        )
        if settings.profile:
            url = t.url("hanode")
            result.profile, result.profile_rps = profile_node(
                py_spy, t.node.pid, wrk_bin, url, script, tmp, settings.duration_s
            )
            result.native_profile, _ = profile_node(
                py_spy, t.node.pid, wrk_bin, url, script, tmp, min(5.0, settings.duration_s), True
            )
        if result.routers is not None:
            say("stream relay: 64 concurrent streams of 200 chunks through every target")
            result.routers.relay = stream_relay.measure(t, settings.routers.relay)
        streaming.measure(
            t,
            result.targets,
            settings.rounds,
            settings.stream_iterations,
            settings.stream_time_limit_s,
        )
        result.failover = replica_failover.measure(
            t,
            overhead.COMPLETION_BODY.encode(),
            settings.failover_concurrency,
            settings.failover_s,
            settings.failover_kill_at_s,
        )
    check_node_log(t.node.output(), result)  # stopped: its last words are in the log too
    for tr in result.targets.values():
        wrk_errors = [w.errors for w in (tr.c1, tr.c64) if w is not None and w.errors]
        stream_errors = tr.stream.errors if tr.stream else 0
        if wrk_errors or stream_errors:
            result.notes.append(
                f"{tr.name}: wrk errors {wrk_errors or 'none'}, stream errors {stream_errors}."
            )


def other_parts(settings: Settings, result: RunResult) -> None:
    """The parts with their own processes after the single-node setup (not --only-routers)."""
    say("streams through a replica's death, continuation off and on (bench/stream_continuation.py)")
    result.continuation = stream_continuation.run(settings.continuation)
    say("recovery: MTTR of a crash, restarted or taken over by a sleeping standby")
    result.recovery = recovery.run(settings.recovery)
    say("overload: interactive latency and batch outcomes with and without admission")
    result.overload = overload.run(settings.overload)
    if settings.cluster:
        nodes = settings.cluster_settings.nodes
        say(f"cluster: {nodes} nodes in one Raft cluster (bench/cluster/)")
        result.cluster = run_cluster(settings.cluster_settings)
        say("cluster scale: 8, 64 and 512 replicas in process (bench/scale.py)")
        result.scale = scale.run(settings.scale_settings, say)


def measure(settings: Settings) -> RunResult:
    result = RunResult(settings)
    t_begin = time.monotonic()
    tools = ensure_tools(settings.install)
    venv_spy = Path(sys.executable).with_name("py-spy")
    py_spy = str(venv_spy) if venv_spy.exists() else (shutil.which("py-spy") or str(venv_spy))
    result.machine = machine_info(tools.nginx, tools.wrk, py_spy)
    busy0, steal0 = machine_cpu()
    own0, wall0 = own_cpu(), time.monotonic()
    result.machine["load average at start"] = f"{os.getloadavg()[0]:.2f}"
    if settings.routers.enabled:
        extras = routers.prepare(settings.routers, settings.install)
        result.routers = routers.RoutersResult(extras, settings.routers)
        result.machine.update(result.routers.versions())
    with tempfile.TemporaryDirectory(prefix="hanode-bench-") as tmp_name:
        single_node(settings, result, Path(tmp_name), tools.nginx, tools.wrk, py_spy)
        if result.routers is not None:
            routers.run_after(
                result.routers, Path(tmp_name), tools.nginx, tools.wrk, settings.routers
            )
    if not settings.only_routers:
        other_parts(settings, result)
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


def check_node_log(text: str, result: RunResult) -> None:
    """Surface hanode's own complaints (errors, warnings) in the report."""
    counts = log_complaints(text)
    result.machine["hanode_log"] = (
        f"{len(text.splitlines())} lines, {len(text.encode())} bytes over the whole run"
    )
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
    p.add_argument(
        "--no-install",
        action="store_true",
        help="never apt-get install (nor pip-install the LLM routers' venvs)",
    )
    p.add_argument(
        "--no-cluster", action="store_true", help="skip the cluster and cluster scale parts"
    )
    p.add_argument(
        "--only-cluster",
        action="store_true",
        help="run only the cluster and cluster scale parts and print them (docs/benchmarks.md "
        "is left alone)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of every part with short durations; prints, writes no report "
        "unless --output is given",
    )
    p.add_argument(
        "--no-routers",
        action="store_true",
        help="leave out vllm-router, LiteLLM and hanode's workers variants",
    )
    p.add_argument(
        "--only-routers",
        action="store_true",
        help="the single-node setup with every target, the proxy-limited and per-target "
        "failover runs; nothing else (prints; docs/benchmarks.md is left alone unless --output)",
    )
    p.add_argument("--output", type=Path, default=None, help="markdown report")
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.rounds, a.warmup = 2.0, 1, 1.0
        a.stream_iterations, a.failover_seconds = 200, 4.0
    partial = a.quick or a.only_routers  # a partial run never overwrites docs/benchmarks.md
    output = a.output if a.output is not None or partial else Settings().output
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
        output=output,
        cluster=not a.no_cluster,
        only_cluster=a.only_cluster,
        cluster_settings=QUICK_CLUSTER if a.quick else ClusterSettings(),
        scale_settings=scale.QUICK if a.quick else scale.ScaleSettings(),
        continuation=(
            stream_continuation.QUICK if a.quick else stream_continuation.ContinuationSettings()
        ),
        recovery=recovery.QUICK if a.quick else recovery.RecoverySettings(),
        overload=overload.QUICK if a.quick else overload.OverloadSettings(),
        routers=(
            routers.RoutersSettings(enabled=False)
            if a.no_routers
            else (routers.QUICK if a.quick else routers.RoutersSettings())
        ),
        only_routers=a.only_routers and not a.no_routers,
    )


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(128 + signum)  # SystemExit unwinds the with/finally blocks that stop our processes


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if settings.only_cluster:
        only = run_cluster(settings.cluster_settings)
        print(f"\n{render_cluster(only)}\n\n{cluster_summary(only)}")
        sized = scale.run(settings.scale_settings, say)
        limits = scale_report.limits_from(sized, only)
        print(f"\n{scale_report.render(sized, limits)}\n\n{scale_report.summary(sized)}")
        return 1 if only.error or sized.error else 0
    try:
        result = measure(settings)
    except (BenchError, TimeoutError, RuntimeError) as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    print()
    print(report.render_summary(result))
    if settings.output is not None:
        settings.output.parent.mkdir(parents=True, exist_ok=True)
        settings.output.write_text(report.render(result))
        print(f"\nbench: wrote {settings.output} ({result.elapsed_s:.0f} s)")
    else:
        print(f"\nbench: no report written ({result.elapsed_s:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
