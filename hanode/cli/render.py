"""Human rendering for hanodectl: tables a person reads at a glance.

Input is the status document shape (``hanode.status.status_document`` plus ``freshness``), as
rebuilt from the gRPC answer by ``hanode.api.convert``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def _ms1(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}ms"


def _clock(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%H:%M:%S", time.localtime(ts))


def _process(process: Any) -> str:
    """A replica's process: what its node saw, and what is wanted when that differs."""
    if not isinstance(process, dict) or not process.get("observed"):
        return "-"
    observed, desired = str(process["observed"]), str(process.get("desired") or "")
    settled = {"run": ("running",), "sleep": ("sleeping",), "stop": ("stopped",)}
    if not desired or observed in settled.get(desired, ()):
        return observed
    return f"{observed}->{desired}"


def _yes_no(value: bool | None) -> str:
    return "?" if value is None else ("yes" if value else "no")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned columns, two spaces apart, trailing blanks trimmed."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


def _freshness_line(doc: dict[str, Any]) -> str | None:
    fresh = doc.get("freshness")
    if not fresh:
        return None
    age = float(fresh.get("last_applied_age_s") or 0.0)
    line = f"commit index {fresh.get('commit_index', 0)}, last applied {age:.1f}s ago"
    if fresh.get("has_quorum"):
        return f"quorum: yes   {line}"
    return f"quorum: NO (this node's view may be stale; changes are refused)   {line}"


def _consensus_lines(doc: dict[str, Any]) -> list[str]:
    c = doc.get("consensus")
    if not c:
        return []
    out = [
        f"term {c.get('term', 0)} (leader claim: term {c.get('leader_term', 0)})   "
        f"protocol {c.get('protocol', '-')}, cluster version {c.get('cluster_version', '-')}   "
        f"state {c.get('state_digest') or '-'}"
    ]
    if c.get("problem"):
        out.append(f"CONSENSUS FAILED: {c['problem']} (the node is stopping)")
    if c.get("halted"):
        out.append(f"HALTED: this node stopped applying cluster commands: {c['halted']}")
    lost = c.get("lost_nodes") or []
    if lost:
        out.append(f"LOST NODES: {', '.join(lost)} (their replicas are out of routing)")
    return out


def status_table(doc: dict[str, Any]) -> str:
    leader = doc.get("leader")
    lines = [f"node: {doc.get('node') or '-'}   leader: {leader or '- (none)'}"]
    fresh = _freshness_line(doc)
    if fresh:
        lines.append(fresh)
    lines += _consensus_lines(doc)

    nodes = doc.get("nodes") or []
    if nodes:
        lines.append("")
        node_rows = [
            (
                ("* " if n.get("name") == leader else "  ") + str(n.get("name") or "-"),
                n.get("raft_address") or "-",
                n.get("api_address") or "-",
                n.get("router_address") or "-",
                _yes_no(n.get("reachable")),
                "LOST" if n.get("lost") else "ok",
                str(n.get("protocol") or "-"),
            )
            for n in nodes
        ]
        lines += table(
            ("  NODE", "RAFT", "API", "ROUTER", "REACHABLE", "LEASE", "PROTOCOL"), node_rows
        )

    replicas = doc.get("replicas") or []
    lines.append("")
    if not replicas:
        lines.append("no replicas configured")
        return "\n".join(lines)
    header = (
        "REPLICA",
        "MODEL",
        "NODE",
        "ROLE",
        "ADMIN",
        "HEALTH",
        "WEIGHT",
        "BREAKER",
        "GPU",
        "KV",
        "QUEUE",
        "LAT",
        "TTFT",
        "TPOT",
        "INFL",
        "PROCESS",
        "REASON",
    )
    rows: list[tuple[Any, ...]] = []
    for r in replicas:
        queue = r.get("queue_depth")
        rows.append(
            (
                r["name"],
                r.get("model") or "-",
                r.get("node") or "-",
                r.get("role") or "-",
                r.get("admin") or "-",
                f"{r.get('health') or '-'}({r.get('health_level', 0)})",
                f"{float(r.get('weight') or 0.0):.2f}",
                (r.get("breaker") or {}).get("state", "closed"),
                _pct(r.get("gpu_mem")),
                _pct(r.get("kv_usage")),
                "-" if queue is None else f"{queue:g}",
                _ms(r.get("latency_ms")),
                _ms(r.get("ttft_ms")),
                _ms1(r.get("tpot_ms")),
                str(r.get("inflight", 0)),
                _process(r.get("process")),
                (r.get("reason") or "")[:60],
            )
        )
    lines += table(header, rows)
    return "\n".join(lines)


def breakers_table(breakers: list[dict[str, Any]]) -> str:
    if not breakers:
        return "no open breakers"
    rows = [
        (
            b["replica"],
            b.get("state") or "-",
            b.get("failure_class") or "-",
            _clock(b.get("until")),
            b.get("source") or "-",
            b.get("node") or "-",
        )
        for b in breakers
    ]
    return "\n".join(table(("REPLICA", "STATE", "FAILURE", "UNTIL", "SOURCE", "NODE"), rows))


def members_table(members: list[dict[str, Any]]) -> str:
    if not members:
        return "no members"
    rows = [
        (
            m["address"],
            m.get("node") or "-",
            "leader" if m.get("leader") else "follower",
            "yes" if m.get("connected") or m.get("self") else "no",
            "(this node)" if m.get("self") else "",
        )
        for m in members
    ]
    return "\n".join(table(("ADDRESS", "NODE", "ROLE", "CONNECTED", ""), rows))


def event_line(event: dict[str, Any]) -> str:
    ts = _clock(event.get("ts"))
    return f"{ts}  #{event['seq']:<5} {event['kind']:<11} {event['subject']:<12} {event['message']}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def incidents_table(incidents: list[dict[str, Any]]) -> str:
    """One row per incident (MTTR: detected to capacity restored), then each timeline."""
    if not incidents:
        return "no incidents"
    rows = [
        (
            i["id"],
            i["model"],
            "open" if i["open"] else "closed",
            _clock(i["detected"]),
            _secs(i.get("mttr_s")),
            _secs(i.get("duration_s")),
        )
        for i in incidents
    ]
    out = table(("INCIDENT", "MODEL", "STATE", "DETECTED", "MTTR", "DURATION"), rows)
    for inc in incidents:
        out.append("")
        out.append(f"{inc['id']}:")
        start = float(inc["detected"])
        for step in inc.get("timeline", []):
            offset = float(step["ts"]) - start
            out.append(f"  +{offset:6.2f}s  {step['what']:<16} {step['message']}".rstrip())
    return "\n".join(out)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def slo_table(node: str, slos: list[dict[str, Any]]) -> str:
    """One row per model and class: target, success, availability, p95, MTTR, burn rates
    over the alert windows, and the multiwindow pairs burning now."""
    if not slos:
        return f"no SLO data on {node} yet (no requests)"
    windows = ("5m", "1h", "30m", "6h", "3d")
    rows = [
        (
            s["model"],
            s["request_class"],
            _ratio(s["target"]),
            f"{s['requests_1h']:g}",
            _ratio(s.get("success_rate_1h")),
            _ratio(s.get("availability_1h")),
            _secs(s.get("p95_latency_s")),
            _secs(s.get("mttr_s")),
            *(f"{s['burn'].get(w, 0.0):.2f}" for w in windows),
            ",".join(s.get("alerts", [])) or "-",
        )
        for s in slos
    ]
    head = ("MODEL", "CLASS", "TARGET", "REQ/1H", "SUCCESS", "AVAIL", "P95", "MTTR")
    burns = tuple(f"BURN {w}" for w in windows)
    out = table((*head, *burns, "ALERTS"), rows)
    return "\n".join([f"SLOs measured by the router of {node}:", *out])


def rollouts_table(rollouts: list[dict[str, Any]]) -> str:
    """Each rollout: its state (and why it waits), then one row per replica."""
    if not rollouts:
        return "no rollouts"
    out: list[str] = []
    for ro in rollouts:
        if out:
            out.append("")
        head = f"rollout {ro['id']} of {ro['model']}: {ro['state']}"
        if ro.get("duration_s") is not None:
            head += f" after {_secs(ro.get('duration_s'))}"
        head += f", {ro.get('serving', 0)} serving"
        if ro.get("surge_replica"):
            head += f", surge {ro['surge_replica']} {ro.get('surge_state') or 'planned'}"
        out.append(head)
        if ro.get("waiting"):
            out.append(f"  {ro['waiting']}")
        if ro.get("reason"):
            out.append(f"  {ro['reason']}")
        rows = [
            (
                r["name"],
                r["step"],
                "yes" if r.get("serving") else "no",
                str(r.get("inflight", 0)) if r["step"] == "draining" else "",
                _secs(r.get("unavailable_s")),
                r.get("reason", ""),
            )
            for r in ro.get("replicas", [])
        ]
        out += table(("REPLICA", "STEP", "SERVING", "IN FLIGHT", "UNAVAILABLE", "WHY"), rows)
    return "\n".join(out)
