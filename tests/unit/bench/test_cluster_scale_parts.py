"""The pure parts of the live cluster bench added for cluster scale: capacity, the ceiling's
figures, and the report lines that follow the node count."""

from __future__ import annotations

import math
from collections import Counter

from bench.cluster import ClusterResult, ClusterSettings
from bench.cluster.ceiling import CeilingSample
from bench.cluster.report import ceiling_lines, nodes_by_cpu, render, usage_lines
from bench.cluster.usage import NodeUsage, capacity

MIB = 2**20


def _usage(n: int, rss: int = 70 * MIB, cpu: float = 0.02) -> list[NodeUsage]:
    return [NodeUsage(f"n{i + 1}", rss, cpu, 50 * MIB, 0.005) for i in range(n)]


def test_capacity_adds_what_the_free_memory_holds_at_the_largest_footprint() -> None:
    idle = _usage(7)
    idle[3] = NodeUsage("n4", 130 * MIB, 0.05, 70 * MIB, 0.0)  # the largest: 200 MiB
    cap = capacity(idle, _usage(7, cpu=0.04), 2000 * MIB, 2)
    assert cap is not None
    assert cap.nodes_by_memory == 7 + 10
    assert math.isclose(cap.idle_cpu_share, 6 * 0.025 + 0.05)
    assert math.isclose(cap.busy_cpu_share, 7 * 0.045)
    assert capacity([], [], 2000 * MIB, 2) is None


def test_nodes_by_cpu_is_the_cores_over_the_busiest_idle_node() -> None:
    r = ClusterResult(ClusterSettings(nodes=7))
    assert nodes_by_cpu(r) is None
    r.usage_idle = _usage(7, cpu=0.045)  # 0.05 a node with its simulators
    r.capacity = capacity(r.usage_idle, [], 1000 * MIB, 2)
    assert nodes_by_cpu(r) == 40
    text = "\n".join(usage_lines(r))
    assert "| n7 | 70 |" in text and "**40 idle nodes**" in text


def test_the_ceiling_reports_the_leaders_commit_rate_and_the_call_latency() -> None:
    x = CeilingSample(16, 8.0, 480, 470, Counter({"StatusCode.UNAVAILABLE": 2}))
    x.latencies_ms = [float(v) for v in range(1, 101)]
    assert x.per_s == 60.0
    assert x.p50_ms == 50.0 and x.p99_ms == 100.0  # nearest rank (bench.harness)
    r = ClusterResult(ClusterSettings())
    assert ceiling_lines(r) == ["Not measured."]
    r.ceilings = [x]
    assert "| 16 | 8.0 | 480 | 60 | 50.0 | 100.0 | StatusCode.UNAVAILABLE 2 |" in ceiling_lines(r)


def test_the_report_follows_the_node_count() -> None:
    text = render(ClusterResult(ClusterSettings(nodes=7)))
    assert text.startswith("7 `hanode run` nodes") and "three" not in text
