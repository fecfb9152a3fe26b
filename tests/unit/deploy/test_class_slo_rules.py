"""The request classes' burn-rate alert rules (deploy/prometheus/hanode-class-slo.yml):
promtool check and unit tests (a hand-computed example: 2% errors against a 99.9% target is
20x, 50% against 95% is 10x), and every metric they read exists in a node's registry."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hanode.metrics.registry import NodeMetrics
from hanode.policies.burn_rate import SloSeries

RULES = Path(__file__).resolve().parents[3] / "deploy" / "prometheus" / "hanode-class-slo.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: `make ops-deps` (Debian package prometheus)"
)


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
        [PROMTOOL, "test", "rules", "hanode-class-slo.test.yml"],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_read_metrics_a_node_exports() -> None:
    metrics = NodeMetrics()
    metrics.admission.class_requests.labels("m", "batch").inc()
    metrics.admission.class_failures.labels("m", "batch").inc()
    series = SloSeries(0.95)
    series.record(60.0, False, None)
    metrics.admission.watch(lambda: {"models": {}, "slo": [series.report("m", "batch", 60.0)]})
    names = {s.name for family in metrics.registry.collect() for s in family.samples}
    names |= {f.name for f in metrics.registry.collect()}
    used = set(re.findall(r"\bhanode_[a-z_]+", RULES.read_text()))
    assert used, "no metric found in the rules"
    assert used <= names, used - names
