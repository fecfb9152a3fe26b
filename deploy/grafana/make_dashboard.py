"""Writes hanode-dashboard.json (Grafana, importable): `python deploy/grafana/make_dashboard.py`.

Kept as code so every panel's query is written once; tests/unit/deploy checks the JSON against
a schema of Grafana's dashboard structure and every metric name against hanode's /metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}
OUT = Path(__file__).with_name("hanode-dashboard.json")


def panel(
    pid: int,
    title: str,
    exprs: list[tuple[str, str]],
    x: int,
    y: int,
    unit: str = "short",
    kind: str = "timeseries",
    w: int = 12,
    h: int = 8,
    description: str = "",
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


PANELS = [
    panel(1, "Success rate by kind (technical, functional, quality)", [
        ('sum by (kind) (rate(hanode_request_success_total{model=~"$model"}[5m])) '
         '/ ignoring(kind) group_left sum(rate(hanode_requests_total{model=~"$model"}[5m]))',
         "{{kind}}"),
    ], 0, 0, unit="percentunit",
        description="technical: 2xx; functional: usable output, not cut; quality: within the "
        "[slo] latency targets"),
    panel(2, "p95 latency and time to first token", [
        ('histogram_quantile(0.95, sum by (le, model) '
         '(rate(hanode_request_duration_seconds_bucket{model=~"$model"}[5m])))', "p95 {{model}}"),
        ('histogram_quantile(0.95, sum by (le, model) '
         '(rate(hanode_time_to_first_token_seconds_bucket{model=~"$model"}[5m])))',
         "p95 TTFT {{model}}"),
    ], 12, 0, unit="s"),
    panel(3, "Replica weights", [
        ('max by (replica) (hanode_replica_weight{model=~"$model"})', "{{replica}}"),
    ], 0, 8, unit="percentunit"),
    panel(4, "Breakers: transitions and failed tries", [
        ("sum by (replica, to_state) (increase(hanode_breaker_transitions_total[5m]))",
         "{{replica}} -> {{to_state}}"),
        ("sum by (failure_class) (rate(hanode_upstream_failures_total[5m]))",
         "failed tries: {{failure_class}}"),
    ], 12, 8),
    panel(5, "GPU memory pressure and KV cache", [
        ('max by (replica) (hanode_replica_gpu_memory_usage_perc{model=~"$model"})',
         "GPU {{replica}}"),
        ('max by (replica) (hanode_replica_kv_cache_usage_perc{model=~"$model"})',
         "KV {{replica}}"),
    ], 0, 16, unit="percentunit",
        description="80% prepares capacity, 90% cuts traffic, 95% removes the replica"),
    panel(6, "Queues and shed requests", [
        ('sum by (replica) (hanode_replica_queue_depth{model=~"$model"})',
         "engine queue {{replica}}"),
        ("sum by (reason) (rate(hanode_rejected_requests_total[5m]))", "refused: {{reason}}"),
        ('sum by (model) (rate(hanode_no_replica_total{model=~"$model"}[5m]))',
         "503 no replica {{model}}"),
        ("sum by (model) (rate(hanode_retry_budget_exhausted_total[5m]))",
         "retry budget spent {{model}}"),
        ('sum by (model, class) (hanode_admission_queue_length{model=~"$model"})',
         "admission queue {{model}}/{{class}}"),
        ('sum by (model, outcome) (rate(hanode_admission_total{model=~"$model",'
         'outcome=~"full|timeout|no_replica"}[5m]))', "shed {{model}}: {{outcome}}"),
    ], 12, 16,
        description="Engine queue depth, the admission queues per class, requests shed "
        "(queue full, waited too long, no replica) and what the front door refused"),
    panel(7, "Leader and quorum", [
        ("min(hanode_cluster_has_quorum)", "quorum (every node)"),
        ("sum(hanode_cluster_is_leader)", "leaders"),
        ("min(hanode_cluster_leader_known)", "leader known (every node)"),
        ("min(hanode_cluster_members_connected)", "fewest members connected"),
    ], 0, 24, kind="stat", w=12, h=6),
    panel(8, "Incidents and MTTR", [
        ('sum by (model) (increase(hanode_incident_mttr_seconds_count{model=~"$model"}[1h]))',
         "incidents closed/h {{model}}"),
        ('histogram_quantile(0.5, sum by (le, model) '
         '(rate(hanode_incident_mttr_seconds_bucket{model=~"$model"}[6h])))', "MTTR p50 {{model}}"),
        ('histogram_quantile(0.95, sum by (le, model) '
         '(rate(hanode_incident_mttr_seconds_bucket{model=~"$model"}[6h])))', "MTTR p95 {{model}}"),
    ], 12, 24, h=6),
    panel(10, "SLO burn rate per class (hanode's own)", [
        ('max by (model, class) (hanode_slo_burn_rate{model=~"$model",window="1h"})',
         "1h {{model}}/{{class}}"),
        ('max by (model, class) (hanode_slo_burn_rate{model=~"$model",window="6h"})',
         "6h {{model}}/{{class}}"),
    ], 0, 38, w=24,
        description="1 spends the error budget exactly over the SLO period; 14.4 over 1h pages"),
    panel(9, "Replica processes: restarts and crash loops", [
        ("max by (replica) (hanode_replica_restarts_in_window)", "restarts {{replica}}"),
        ("max by (replica) (hanode_replica_crash_loop)", "crash loop {{replica}}"),
        ("sum by (replica) (increase(hanode_health_transitions_total[15m]))",
         "health changes/15m {{replica}}"),
    ], 0, 30, w=24),
]  # fmt: skip

DASHBOARD = {
    "uid": "hanode-overview",
    "title": "hanode",
    "description": "HA front doors for inference replicas: success, latency, weights, "
    "breakers, GPU memory, queues, leader/quorum, incidents",
    "tags": ["hanode", "inference"],
    "timezone": "browser",
    "editable": True,
    "schemaVersion": 39,
    "version": 1,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "annotations": {"list": []},
    "templating": {
        "list": [
            {
                "name": "datasource", "type": "datasource", "query": "prometheus",
                "label": "Data source",
            },
            {
                "name": "model", "type": "query", "datasource": DS, "label": "Model",
                "query": "label_values(hanode_requests_total, model)",
                "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
            },
        ]
    },
    "panels": PANELS,
}  # fmt: skip

if __name__ == "__main__":
    OUT.write_text(json.dumps(DASHBOARD, indent=2) + "\n")
    print(f"wrote {OUT}")
