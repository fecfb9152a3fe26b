"""deploy/: the Grafana dashboard loads (JSON schema of Grafana's dashboard structure), the
Prometheus rules pass `promtool check rules` and their unit tests (`promtool test rules`),
and every metric either names is one a hanode node exports (issue 14)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hanode.metrics.node_state import ClusterFacts, ProcessFacts
from hanode.metrics.registry import NodeMetrics
from hanode.pool.snapshot import PoolSnapshot

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "hanode-alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "hanode-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus: make ops-deps)"
)

# What Grafana needs to import a dashboard and draw its panels (a subset of its model).
TARGET = {
    "type": "object",
    "required": ["refId", "expr"],
    "properties": {"refId": {"type": "string"}, "expr": {"type": "string", "minLength": 1}},
}
PANEL = {
    "type": "object",
    "required": ["id", "type", "title", "gridPos", "targets", "datasource"],
    "properties": {
        "id": {"type": "integer"},
        "type": {"enum": ["timeseries", "stat", "gauge", "table", "bargauge", "text"]},
        "title": {"type": "string", "minLength": 1},
        "gridPos": {
            "type": "object",
            "required": ["h", "w", "x", "y"],
            "properties": {
                "h": {"type": "integer", "minimum": 1},
                "w": {"type": "integer", "minimum": 1, "maximum": 24},
                "x": {"type": "integer", "minimum": 0, "maximum": 23},
                "y": {"type": "integer", "minimum": 0},
            },
        },
        "targets": {"type": "array", "minItems": 1, "items": TARGET},
    },
}
DASHBOARD_SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 16},
        "panels": {"type": "array", "minItems": 1, "items": PANEL},
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {"type": "object", "required": ["name", "type"]},
                }
            },
        },
        "time": {"type": "object", "required": ["from", "to"]},
    },
}

_METRIC = re.compile(r"(?<![\w:])(hanode_[a-z0-9_]+)")


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def test_dashboard_matches_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = _dashboard()
    jsonschema.validate(doc, DASHBOARD_SCHEMA)
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    # No two panels overlap on Grafana's 24-column grid.
    cells: set[tuple[int, int]] = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


def test_dashboard_is_what_its_generator_writes() -> None:
    code = (
        "import json, runpy; "
        "d = runpy.run_path('deploy/grafana/make_dashboard.py')['DASHBOARD']; "
        "print(json.dumps(d, indent=2))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert done.stdout == DASHBOARD.read_text(), "run deploy/grafana/make_dashboard.py"


def test_dashboard_covers_what_operators_watch() -> None:
    text = DASHBOARD.read_text()
    for metric in (
        "hanode_request_success_total", "hanode_request_duration_seconds_bucket",
        "hanode_replica_weight", "hanode_breaker_transitions_total",
        "hanode_replica_gpu_memory_usage_perc", "hanode_replica_queue_depth",
        "hanode_rejected_requests_total", "hanode_cluster_has_quorum", "hanode_cluster_is_leader",
        "hanode_incident_mttr_seconds_bucket",
    ):  # fmt: skip
        assert metric in text, metric


@needs_promtool
def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


@needs_promtool
def test_promtool_rule_unit_tests() -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "hanode-alerts.test.yml"],
        cwd=RULES.parent, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_rules_cover_the_alerts_of_the_issue() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    assert {"HanodeNoLeader", "HanodeNoQuorum", "HanodeReplicaFlapping",
            "HanodeGpuMemoryPressure", "HanodeCrashLoop", "HanodeSloFastBurn",
            "HanodeSloSlowBurn"} <= alerts  # fmt: skip


def _exported_names() -> set[str]:
    """Every sample name a node's /metrics can carry: a cluster member with a supervisor."""
    metrics = NodeMetrics()
    metrics.watch_pool(lambda: PoolSnapshot(), dict)
    metrics.watch_node(
        lambda: ClusterFacts(True, True, True, 3, 2),
        lambda: {"r1": ProcessFacts("running", 0)},
    )
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
    }
    names: set[str] = set()
    for family in metrics.registry.collect():
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    return names


def test_every_metric_named_in_rules_and_dashboard_exists() -> None:
    exported = _exported_names()
    used = set(_METRIC.findall(RULES.read_text())) | set(_METRIC.findall(DASHBOARD.read_text()))
    assert used, "no metric found: the pattern is broken"
    missing = sorted(used - exported)
    assert not missing, f"not exported by hanode: {missing}"


def test_the_name_check_catches_a_made_up_metric() -> None:
    assert "hanode_made_up_total" not in _exported_names()
    assert _METRIC.findall("rate(hanode_x_total[5m]) / hanode:rec:ratio") == ["hanode_x_total"]
