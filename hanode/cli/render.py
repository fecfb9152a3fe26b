"""Human rendering of the status document: a table a person reads at a glance."""

from __future__ import annotations

from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def status_table(doc: dict[str, Any]) -> str:
    lines = []
    leader = doc.get("leader")
    nodes = ", ".join(n["name"] for n in doc.get("nodes", []))
    lines.append(f"node: {doc.get('node')}   leader: {leader or '-'}   nodes: {nodes}")
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
        "LAT",
        "INFL",
        "REASON",
    )
    rows = [header]
    for r in doc.get("replicas", []):
        rows.append(
            (
                r["name"],
                r["model"],
                r.get("node") or "-",
                r["role"],
                r["admin"],
                r["health"],
                f"{r['weight']:.2f}",
                r.get("breaker", {}).get("state", "closed"),
                _pct(r.get("gpu_mem")),
                _pct(r.get("kv_usage")),
                _ms(r.get("latency_ms")),
                str(r.get("inflight", 0)),
                (r.get("reason") or "")[:60],
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def event_line(event: dict[str, Any]) -> str:
    import time

    ts = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    return f"{ts}  #{event['seq']:<5} {event['kind']:<11} {event['subject']:<12} {event['message']}"
