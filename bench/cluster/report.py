"""The Cluster section of docs/benchmarks.md and its lines in the summary on stdout."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench.cluster import ClusterResult
from bench.harness import percentile


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


def ceiling_lines(r: ClusterResult) -> list[str]:
    if not r.ceilings:
        return ["Not measured."]
    out = [
        "| clients | seconds | commits | commits/s | call p50 (ms) | call p99 (ms) | errors |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for x in r.ceilings:
        errors = ", ".join(f"{k} {v}" for k, v in x.errors.most_common()) or "none"
        out.append(
            f"| {x.threads} | {x.duration_s:.1f} | {x.commits} | {x.per_s:.0f} | "
            f"{_fmt(x.p50_ms)} | {_fmt(x.p99_ms)} | {errors} |"
        )
    out += [
        "",
        "Method: that many client threads (in the bench process) call the gRPC API's "
        "`ResetBreaker` in a loop, spread over every node (a follower passes the command to the "
        "leader, as `hanodectl` on any node does); each call returns once its `reset_breaker` "
        "command is committed and applied, so commits/s is the leader's commit-index delta over "
        "the window. The clients, the nodes and their simulators share the machine's "
        f"{r.capacity.cores if r.capacity else '?'} cores: this is the ceiling of the whole "
        "box, the leader's consensus thread included, not of Raft alone.",
    ]
    return out


def nodes_by_cpu(r: ClusterResult) -> int | None:
    """Nodes whose idle CPU (hanode and its simulators) would fill every core of this machine."""
    if r.capacity is None or not r.usage_idle:
        return None
    per_node = max(u.cpu_share + u.sims_cpu_share for u in r.usage_idle)
    return int(r.capacity.cores / per_node) if per_node > 0 else None


def usage_lines(r: ClusterResult) -> list[str]:
    if not r.usage_idle:
        return ["Not measured."]
    busy = {u.node: u for u in r.usage_busy}
    out = [
        "| node | hanode RSS (MiB) | hanode CPU idle | hanode CPU traffic | simulators RSS (MiB) "
        "| simulators CPU idle |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for u in r.usage_idle:
        b = busy.get(u.node)
        out.append(
            f"| {u.node} | {u.rss_bytes / 2**20:.0f} | {u.cpu_share:.1%} | "
            f"{f'{b.cpu_share:.1%}' if b else 'n/a'} | {u.sims_rss_bytes / 2**20:.0f} | "
            f"{u.sims_cpu_share:.1%} |"
        )
    cap = r.capacity
    if cap is not None:
        total = sum(u.rss_bytes + u.sims_rss_bytes for u in r.usage_idle)
        by_cpu = nodes_by_cpu(r)
        out += [
            "",
            f"{len(r.usage_idle)} nodes with their simulators: {total / 2**20:.0f} MiB resident "
            f"in all; the whole cluster used {cap.idle_cpu_share:.2f} of {cap.cores} cores at "
            f"idle and {cap.busy_cpu_share:.2f} under the traffic window (CPU share = CPU "
            "seconds from `/proc/PID/stat` over the write window / its length; memory = "
            "`VmRSS` at its end). By memory this machine would hold about "
            f"**{cap.nodes_by_memory} nodes** of that size (the ones running plus "
            "`MemAvailable` / the largest node); by CPU, "
            + (
                f"about **{by_cpu} idle nodes** fill its cores"
                if by_cpu is not None
                else "no figure"
            )
            + ". CPU is the limit on this machine: past it the Raft timers (election "
            f"{r.settings.election_min_s:g}-{r.settings.election_max_s:g} s) and the health "
            "checks of every node compete for the cores.",
        ]
    return out


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
    for x in r.ceilings:
        lines.append(
            f"  write ceiling, {x.threads} clients: {x.per_s:.0f} commits/s "
            f"(call p50 {_fmt(x.p50_ms)} ms, p99 {_fmt(x.p99_ms)} ms)"
        )
    if r.capacity is not None:
        rss = sum(u.rss_bytes for u in r.usage_idle) / max(1, len(r.usage_idle))
        lines.append(
            f"  per node: hanode {rss / 2**20:.0f} MiB; cluster CPU {r.capacity.idle_cpu_share:.2f}"
            f" cores idle, {r.capacity.busy_cpu_share:.2f} under traffic; holds ~"
            f"{r.capacity.nodes_by_memory} nodes by memory, ~{nodes_by_cpu(r)} by CPU"
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
        f"{s.open_base_s:g}, max_ejection_percent {s.max_ejection_percent:g} (everything else "
        "default).",
        "",
        "#### Breaker propagation (one router opens a breaker -> the other routers have it open)",
        "",
    ]
    if r.propagation:
        gap = statistics.median(p.poll_gap_ms for p in r.propagation)
        out += [
            f"{len(r.propagation)} breakers, {s.nodes - 1} peers each "
            f"(origin rotates over the nodes, the failing replica over all replicas).",
            "",
            "| measured by | samples | p50 | p99 | max | min |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *propagation_rows(r),
            "",
            f"* Polled: ops `/status` of all {s.nodes} nodes polled by {s.nodes} threads every "
            f"{s.breaker_poll_s * 1e3:g} ms (median gap between two answers of one node "
            f"{gap:.1f} ms: that is the resolution); delay = first poll of a peer showing the "
            "breaker `open` minus the first poll of the origin showing it.",
            "* Event timestamps: the wall-clock `timestamp` of the `breaker ... -> open` event "
            "line each node logs (origin: its own transition; peers: the forced open when the "
            "replicated breaker was applied). Peers keep their forced opens out of the "
            "replicated event log (the origin's open is in it already), so the nodes' JSON logs "
            "are read. All nodes share one clock; the line is stamped at the transition, on "
            "every node alike.",
            f"* By origin (event timestamps): {split_by_origin(r) or 'n/a'}.",
            "* Reading: a breaker write reaches the leader, is replicated and committed by a "
            "majority, and each follower applies it once it learns the new commit index. hanode "
            "has pysyncobj send each entry at once (`appendEntriesUseBatch` off) rather than "
            "with the next append-entries period "
            f"({min(0.1, s.election_min_s / 4):g} s here), which is why the delays are "
            "milliseconds, not periods.",
            "* The open is replicated as a duration (an `open_breaker` command with `open_s`; "
            "only GPU OOM, server-error and refused-connection opens are), and a peer applies it "
            "only while the replicas it has ejected stay within `[breaker] "
            f"max_ejection_percent` ({s.max_ejection_percent:g} %) of the model's serving "
            f"replicas: one open at a time of {s.nodes * s.replicas_per_node} here "
            f"({100 / (s.nodes * s.replicas_per_node):.0f} %), so every peer applies it.",
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
            f"| kill -> all {s.nodes - 1} survivors name the same new leader (s) | "
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
    out += ["", "#### Consensus write ceiling (clients pushing writes through every node)", ""]
    out += ceiling_lines(r)
    out += ["", "#### What each node costs this machine", ""]
    out += usage_lines(r)
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
        out += [
            "",
            "Breakdown (commands of the window read back from the leader's Raft journal with "
            "pysyncobj's own journal reader):",
        ]
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
