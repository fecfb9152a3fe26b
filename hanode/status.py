"""The node's status document: one JSON shape for `hanodectl status`, scripts and the demo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hanode.policies.breaker import ReplicaBreaker
from hanode.pool.snapshot import PoolSnapshot


def status_document(
    node: str,
    snapshot: PoolSnapshot,
    breakers: Mapping[str, ReplicaBreaker],
    inflight: Mapping[str, int],
    events: list[dict[str, Any]],
    now: float,
    leader: str | None = None,
    nodes: list[dict[str, Any]] | None = None,
    freshness: dict[str, Any] | None = None,
) -> dict[str, Any]:
    replicas = []
    for name in sorted(snapshot.replicas):
        state = snapshot.replicas[name]
        obs = state.observation
        breaker = breakers.get(name)
        replicas.append(
            {
                "name": name,
                "node": state.spec.node,
                "model": state.spec.model,
                "url": state.spec.url,
                "engine": state.spec.engine,
                "role": state.role.value,
                "admin": state.admin.value,
                "health": obs.level.name.lower(),
                "health_level": int(obs.level),
                "weight": round(state.weight, 4),
                "gpu_mem": obs.gpu_mem_frac,
                "kv_usage": obs.kv_usage,
                "queue_depth": obs.queue_depth,
                "latency_ms": obs.latency_ms,
                "ttft_ms": obs.ttft_ms,
                "tpot_ms": obs.tpot_ms,
                "gpu_growth": obs.gpu_growth,
                "reason": obs.reason,
                "breaker": breaker.snapshot(now) if breaker is not None else {"state": "closed"},
                "inflight": inflight.get(name, 0),
            }
        )
    return {
        "node": node,
        "leader": leader,
        "nodes": nodes if nodes is not None else [{"name": node}],
        "version": snapshot.version,
        "models": {m: {"replicas_serving": len(snapshot.routes[m].names)} for m in snapshot.models},
        "replicas": replicas,
        "events": events[-20:],
        "freshness": freshness or {},
    }
