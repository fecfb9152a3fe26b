"""The Cluster scale section of docs/benchmarks.md: growth between fleet sizes, its verdict,
and the limits of a fleet of 100 hosts (pure: figures in, text out)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.cluster import ClusterResult
from bench.scale import ScaleResult, SizePoint
from bench.scale_fleet import KINDS

# Cost per applied command "grows at most linearly" with the replica count when, between two
# sizes, cost ratio / size ratio stays at or below this (timing noise on a shared VM allowed).
LINEAR_TOLERANCE = 1.3


@dataclass(frozen=True, slots=True)
class Growth:
    what: str
    small: int  # replicas
    large: int
    ratio: float  # cost(large) / cost(small)

    @property
    def per_replica(self) -> float:
        """The ratio normalised by the size ratio: 1 is linear, below 1 sub-linear."""
        return self.ratio / (self.large / self.small)

    @property
    def linear(self) -> bool:
        return self.per_replica <= LINEAR_TOLERANCE


def growth(what: str, costs: Mapping[int, float]) -> list[Growth]:
    """Growth between each pair of consecutive sizes (a cost of 0 or NaN gives no pair)."""
    sizes = sorted(n for n, c in costs.items() if c == c and c > 0)
    return [Growth(what, a, b, costs[b] / costs[a]) for a, b in itertools.pairwise(sizes)]


def per_command_costs(points: Sequence[SizePoint]) -> dict[str, dict[int, float]]:
    """What one applied command costs a node, by stage and by command kind."""
    out: dict[str, dict[int, float]] = {f"apply: {k}": {} for k in KINDS}
    parts = {
        "apply's rollback copy": "rollback_copy_us",
        "freeze to a ClusterView": "freeze_us",
        "freeze: the state digest": "digest_us",
        "ClusterPool snapshot (event loop)": "pool_us",
        "pool: the local weights": "pool_weights_us",
        "pool: PoolSnapshot.build (routes)": "pool_build_us",
        WHOLE: "path_us",
    }
    for what in parts:
        out[what] = {}
    for p in points:
        for k in KINDS:
            out[f"apply: {k}"][p.replicas] = p.apply_us.get(k, float("nan"))
        for what, attr in parts.items():
            out[what][p.replicas] = float(getattr(p, attr))
    return out


WHOLE = "whole path of one heartbeat"


def verdict(points: Sequence[SizePoint]) -> tuple[bool, str]:
    """Does the cost per applied command grow at most linearly? (reported, never asserted)"""
    costs = per_command_costs(points)
    growths = [g for what, c in costs.items() for g in growth(what, c)]
    if not growths:
        return False, "not measured"
    worst = max(growths, key=lambda g: g.per_replica)
    ok = all(g.linear for g in growths)
    word = "yes" if ok else "no"
    text = (
        f"**{word}**: the steepest growth is {worst.what}, {worst.small} -> {worst.large} "
        f"replicas, x{worst.ratio:.1f} for x{worst.large / worst.small:g} replicas "
        f"({worst.per_replica:.2f} per replica; linear is 1, the limit {LINEAR_TOLERANCE:g})"
    )
    whole = growth(WHOLE, costs[WHOLE])
    if whole and worst.what != WHOLE:
        text += (
            "; the "
            + WHOLE
            + " "
            + ", ".join(f"{g.per_replica:.2f} ({g.small} -> {g.large})" for g in whole)
        )
    return ok, text


def extrapolate(costs: Mapping[int, float], n: int) -> float:
    """Cost at ``n`` replicas from the two largest sizes: a line through them, or the largest
    scaled in proportion, whichever is higher (the cautious reading)."""
    sizes = sorted(k for k, v in costs.items() if v == v)
    if not sizes:
        return float("nan")
    top = sizes[-1]
    proportional = costs[top] * n / top
    if len(sizes) < 2:
        return proportional
    lo = sizes[-2]
    slope = (costs[top] - costs[lo]) / (top - lo)
    return max(costs[top] + slope * (n - top), proportional)


@dataclass(frozen=True, slots=True)
class Fleet100:
    """The limits of a fleet of ``hosts`` hosts of ``per_host`` replicas, from the figures."""

    replicas: int
    heartbeat_per_s: float  # every replica's heartbeat, nothing changing
    traffic_per_s: float | None  # at the live cluster's measured writes per replica under load
    path_ms: float  # what one applied command costs every node
    apply_ceiling_per_s: float  # commands a node can apply per second on one core
    heartbeat_cpu: float  # share of a core every node spends on heartbeats alone
    dump_kib: float
    dump_ms: float
    load_ms: float
    planner_ms: float
    consensus_ceiling_per_s: float | None  # measured on the live cluster
    consensus_nodes: int | None
    consensus_replicas: int | None


def fleet_limits(
    r: ScaleResult,
    hosts: int = 100,
    per_host: int = 8,
    heartbeat_s: float = 10.0,
    writes_per_replica_s: float | None = None,
    consensus_ceiling_per_s: float | None = None,
    consensus_nodes: int | None = None,
    consensus_replicas: int | None = None,
) -> Fleet100 | None:
    if not r.points:
        return None
    n = hosts * per_host

    def at(field: str) -> float:
        return extrapolate({p.replicas: float(getattr(p, field)) for p in r.points}, n)

    path_ms = at("path_us") / 1e3
    hb = n / heartbeat_s
    return Fleet100(
        replicas=n,
        heartbeat_per_s=hb,
        traffic_per_s=n * writes_per_replica_s if writes_per_replica_s is not None else None,
        path_ms=path_ms,
        apply_ceiling_per_s=1e3 / path_ms if path_ms > 0 else float("inf"),
        heartbeat_cpu=hb * path_ms / 1e3,
        dump_kib=at("dump_bytes") / 1024,
        dump_ms=at("dump_ms"),
        load_ms=at("load_ms"),
        planner_ms=at("planner_ms"),
        consensus_ceiling_per_s=consensus_ceiling_per_s,
        consensus_nodes=consensus_nodes,
        consensus_replicas=consensus_replicas,
    )


def limits_paragraph(f: Fleet100 | None, hosts: int = 100, linear: bool = True) -> str:
    """``linear``: the verdict on the measured growth per applied command."""
    if f is None:
        return "Not measured."
    traffic = (
        f"; at the live cluster's write rate under light traffic, {f.traffic_per_s:.0f}/s"
        if f.traffic_per_s is not None
        else ""
    )
    load = max(f.heartbeat_per_s, f.traffic_per_s or 0.0)
    lines = [
        f"A fleet of {hosts} hosts of {f.replicas // hosts} replicas is {f.replicas} replicas "
        f"(figures extrapolated from 64 and 512, the cautious way: {_how}).",
        "",
        f"* **Write rate the agents produce**: {f.heartbeat_per_s:.0f} commits/s from heartbeats "
        f"alone (every replica every `heartbeat_s`){traffic}.",
        f"* **What each commit costs every node** (all nodes apply every command), on this "
        f"machine: {f.path_ms:.1f} ms (decode, apply, freeze, pool snapshot), so one core "
        f"applies at most **{f.apply_ceiling_per_s:.0f} commands/s**; the heartbeats alone take "
        f"{f.heartbeat_cpu:.0%} of a core on every node"
        + (
            f", and {load:.0f}/s would take {load * f.path_ms / 1e3:.0%}."
            if load > f.heartbeat_per_s
            else "."
        ),
    ]
    if f.consensus_ceiling_per_s is not None:
        lines.append(
            f"* **Consensus write ceiling** measured on the live {f.consensus_nodes}-node cluster "
            f"({f.consensus_replicas} replicas, where a command costs little to apply): "
            f"{f.consensus_ceiling_per_s:.0f} commits/s. There every member, the clients and the "
            "simulators share this machine's cores, so it falls with the member count for that "
            "reason too; on separate hosts only the leader's fan-out (an append-entries message "
            "per follower per entry) grows with the members. Scaled by members alone, "
            f"{hosts} voters would sustain ~"
            f"{f.consensus_ceiling_per_s * (f.consensus_nodes or 1) / hosts:.0f}/s (pessimistic, "
            "not measured): "
            + (
                "below the heartbeat rate."
                if f.consensus_ceiling_per_s * (f.consensus_nodes or 1) / hosts < f.heartbeat_per_s
                else "above the heartbeat rate."
            )
        )
    lines += [
        f"* **Snapshot** (pysyncobj's full dump, written at each log compaction and sent to a "
        f"joining or lagging node): {f.dump_kib:.0f} KiB gzipped, {f.dump_ms:.0f} ms to write "
        f"and {f.load_ms:.0f} ms to load, in the consensus thread (`useFork=False`).",
        f"* **Planner**: {f.planner_ms:.0f} ms per round on the leader (once a "
        "`planner_interval_s`).",
        "",
        "Where it breaks first: the per-command rebuild of the whole view and pool snapshot on "
        "every node. Its cost per command grows "
        + ("linearly" if linear else "faster than linearly (see the growth table)")
        + " with the replicas, and the number of commands (heartbeats) grows linearly too, so "
        "a node's CPU for the replicated state grows with the square of the fleet at least. "
        "Done already: the event loop takes only the newest view when several commands "
        "apply in one burst, and the pool's routes are built in one pass over the replicas. "
        "Remedies still open, in order of effect: build the pool snapshot incrementally (its "
        "local weights are most of it, and a `ReplicaRecord` of an unchanged replica is the "
        "same object from view to view), compute the state digest only for checkpoints "
        "rather than at every freeze, a longer `heartbeat_s` for large fleets, and fewer "
        "Raft voters than hosts (pysyncobj has read-only, non-voting nodes; hanode does not "
        "use them yet).",
    ]
    return "\n".join(lines)


_how = "a line through the two largest sizes or the largest scaled in proportion, the higher"


def _f(x: float, digits: int = 1) -> str:
    return "n/a" if x != x else f"{x:,.{digits}f}"


def render(r: ScaleResult, limits: str | None = None) -> str:
    if not r.points:
        return f"Not measured{': ' + r.error if r.error else ''}."
    pts = sorted(r.points, key=lambda p: p.replicas)
    head = " | ".join(f"{p.replicas} replicas" for p in pts)
    sep = " | ".join("---:" for _ in pts)
    out = []
    if r.error:
        out += [f"**The scale run stopped early:** {r.error}", ""]
    out += [
        "In process, no network (`python -m bench.scale`, code in `bench/scale*.py`): each "
        "fleet's replicated document is built through the state machine itself "
        "(`hanode.cluster.state.apply`: nodes, replicas, the leader's claim, a first "
        "observation each, the planner's weights), 8 replicas a host, one model per 8 "
        "replicas (at least 2), every fourth replica of a model a standby. Each stage a node "
        "runs per applied command is timed alone, one command at a time: medians in "
        f"microseconds unless marked ({r.settings.apply_reps} commands of each kind, "
        f"{r.settings.freeze_reps} freezes and pool snapshots, {r.settings.path_reps} whole "
        f"paths); {r.elapsed_s:.0f} s in all. Wall-clock times on a shared machine: read the "
        "ratios.",
        "",
        f"| | {head} |",
        f"| --- | {sep} |",
        f"| hosts / models | {' | '.join(f'{p.hosts} / {p.models}' for p in pts)} |",
    ]

    def row(label: str, values: list[str]) -> None:
        out.append(f"| {label} | {' | '.join(values)} |")

    for k in KINDS:
        row(f"apply: {k}", [_f(p.apply_us.get(k, float("nan"))) for p in pts])
    row(
        "of which apply's rollback copy (orjson of the document)",
        [_f(p.rollback_copy_us) for p in pts],
    )
    row("freeze to a ClusterView (pysyncobj thread)", [_f(p.freeze_us) for p in pts])
    row("of which the state digest", [_f(p.digest_us) for p in pts])
    row("ClusterPool snapshot (event loop)", [_f(p.pool_us) for p in pts])
    row("of which the local weights", [_f(p.pool_weights_us) for p in pts])
    row("of which PoolSnapshot.build (routes)", [_f(p.pool_build_us) for p in pts])
    row(
        "**whole path of one heartbeat** (decode, apply, freeze, pool)",
        [f"**{_f(p.path_us)}**" for p in pts],
    )
    row(
        "CPU of a node for heartbeats alone (replicas / 10 s x path)",
        [f"{p.replicas / 10.0 * p.path_us / 1e6:.1%}" for p in pts],
    )
    row("document as JSON (KiB)", [_f(p.doc_json_bytes / 1024) for p in pts])
    row(
        "full dump, gzip + pickle (KiB; raw pickle)",
        [f"{p.dump_bytes / 1024:.1f} ({p.dump_raw_bytes / 1024:.0f})" for p in pts],
    )
    row("write the dump (ms)", [_f(p.dump_ms, 2) for p in pts])
    row("load the dump (ms)", [_f(p.load_ms, 2) for p in pts])
    row("planner round, LeaderLoop.decide (ms)", [_f(p.planner_ms, 2) for p in pts])
    row("memory: document (KiB, tracemalloc)", [_f(p.doc_kib, 0) for p in pts])
    row("memory: one ClusterView (KiB)", [_f(p.view_kib, 0) for p in pts])
    row("memory: one pool snapshot (KiB)", [_f(p.pool_kib, 0) for p in pts])
    row("memory: peak while building all three (KiB)", [_f(p.peak_kib, 0) for p in pts])
    _ok, text = verdict(pts)
    out += [
        "",
        "Growth per replica (cost ratio between sizes / size ratio; 1 is linear):",
        "",
        "| per applied command | "
        + " | ".join(f"{a.replicas} -> {b.replicas}" for a, b in itertools.pairwise(pts))
        + " |",
        "| --- | " + " | ".join("---:" for _ in pts[1:]) + " |",
    ]
    for what, costs in per_command_costs(pts).items():
        gs = growth(what, costs)
        out.append(f"| {what} | {' | '.join(f'{g.per_replica:.2f}' for g in gs)} |")
    out += [
        "",
        f"Cost per applied command grows at most linearly with the replica count: {text}.",
        "",
        "Reading: `apply` itself is a few dictionary writes, but it first copies the whole "
        "document (orjson) so that a command failing half-way can be undone; that copy is "
        "most of its time and linear in the fleet. `freeze` builds the immutable view the "
        "event loop reads after every command: a replica's record is rebuilt only when its "
        "part of the document changed (records are reused by their JSON), but the digest "
        "and the lookup are still linear. The pool snapshot is rebuilt on the event loop "
        "for each view it takes, every replica's weight and state again (linear; when "
        "commands apply faster than the loop runs it takes only the newest view).",
    ]
    if limits:
        out += ["", "#### Limits for a fleet of 100 hosts", "", limits]
    return "\n".join(out)


def summary(r: ScaleResult) -> str:
    lines = [f"cluster scale (in process, {r.elapsed_s:.0f} s):"]
    for p in sorted(r.points, key=lambda p: p.replicas):
        lines.append(
            f"  {p.replicas} replicas: heartbeat apply {p.apply_us.get(KINDS[0], 0):.0f} us, "
            f"freeze {p.freeze_us:.0f} us, pool {p.pool_us:.0f} us, path {p.path_us:.0f} us; "
            f"dump {p.dump_bytes / 1024:.0f} KiB {p.dump_ms:.1f} ms; planner {p.planner_ms:.1f} ms"
        )
    if r.points:
        lines.append(f"  linear per applied command: {verdict(r.points)[1]}")
    if r.error:
        lines.append(f"  FAILED: {r.error}")
    return "\n".join(lines)


def limits_from(scale: ScaleResult, cluster: ClusterResult | None, hosts: int = 100) -> str:
    """The 100-host paragraph from the scale figures and, where it ran, the live cluster's
    write rate under traffic and its write ceiling."""
    per_replica: float | None = None
    ceiling: float | None = None
    nodes = replicas = None
    heartbeat_s = 10.0
    if cluster is not None:
        heartbeat_s = cluster.settings.heartbeat_s
        traffic = [w for w in cluster.windows if w.requests and "breaker" not in w.label]
        per_replica = traffic[0].per_replica_s if traffic else None
        ceiling = max((x.per_s for x in cluster.ceilings), default=None)
        nodes = cluster.settings.nodes
        replicas = cluster.settings.nodes * cluster.settings.replicas_per_node
    f = fleet_limits(
        scale,
        hosts=hosts,
        heartbeat_s=heartbeat_s,
        writes_per_replica_s=per_replica,
        consensus_ceiling_per_s=ceiling,
        consensus_nodes=nodes,
        consensus_replicas=replicas,
    )
    return limits_paragraph(f, hosts, verdict(scale.points)[0])
