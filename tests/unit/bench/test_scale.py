"""The pure parts of the cluster scale bench: fleets, their commands, growth and its verdict."""

from __future__ import annotations

import math

import pytest

from bench.scale import ScaleResult, ScaleSettings, SizePoint
from bench.scale_fleet import KINDS, PLANNER, Fleet, build_doc, default_fleet, sample_commands
from bench.scale_report import (
    LINEAR_TOLERANCE,
    extrapolate,
    fleet_limits,
    growth,
    limits_paragraph,
    render,
    verdict,
)
from hanode.cluster.planner import plan_weights
from hanode.cluster.state import apply
from hanode.cluster.view import freeze


@pytest.mark.parametrize("n", [8, 64])
def test_a_fleet_document_holds_every_host_replica_and_model(n: int) -> None:
    fleet = default_fleet(n)
    doc = build_doc(fleet)
    view = freeze(doc, 1)
    assert len(view.replicas) == n
    assert len(view.nodes) == fleet.hosts == n // 8
    assert len({r.spec.model for r in view.replicas.values()}) == fleet.models
    assert all(r.may_serve() for r in view.replicas.values() if r.role.value == "active")
    assert any(r.role.value == "standby" for r in view.replicas.values())
    # the replicas of one model are on different hosts, where there are hosts enough
    for m in range(fleet.models):
        hosts = [r.spec.node for r in view.replicas.values() if r.spec.model == f"model-{m}"]
        assert len(set(hosts)) == min(len(hosts), fleet.hosts)
    # a steady state: the planner's weights are written already
    assert plan_weights(view, PLANNER) is None


def test_a_fleet_must_fill_its_hosts() -> None:
    with pytest.raises(ValueError):
        Fleet(10, 8, 2)
    with pytest.raises(ValueError):
        Fleet(0, 8, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_every_sample_command_applies_and_changes_the_document(kind: str) -> None:
    fleet = default_fleet(16)
    doc = build_doc(fleet)
    for cmd in sample_commands(fleet, kind, 40):
        before = repr(doc)
        apply(doc, cmd)  # raises on a refused (fenced, malformed) command
        assert repr(doc) != before, cmd  # even a heartbeat moves obs_ts


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError):
        sample_commands(default_fleet(8), "nope", 1)


def test_growth_is_normalised_by_the_size_ratio() -> None:
    linear = growth("x", {8: 10.0, 64: 80.0, 512: 640.0})
    assert [(g.small, g.large) for g in linear] == [(8, 64), (64, 512)]
    assert all(math.isclose(g.per_replica, 1.0) for g in linear)
    assert all(g.linear for g in linear)
    square = growth("x", {8: 1.0, 64: 64.0})
    assert square[0].per_replica == pytest.approx(8.0)
    assert not square[0].linear
    assert growth("x", {8: float("nan"), 64: 1.0}) == []


def _point(n: int, path: float, apply_us: float = 10.0) -> SizePoint:
    p = SizePoint(n, max(1, n // 8), max(2, n // 8))
    p.apply_us = dict.fromkeys(KINDS, apply_us * n)
    p.freeze_us = p.pool_us = 1.0 * n
    p.path_us = path
    p.dump_bytes, p.dump_ms, p.load_ms, p.planner_ms = 100 * n, 0.01 * n, 0.01 * n, 0.01 * n
    return p


def test_the_verdict_names_the_steepest_growth() -> None:
    ok, text = verdict([_point(8, 80.0), _point(64, 640.0), _point(512, 5120.0)])
    assert ok and "yes" in text
    steep = 640.0 * 8 * (LINEAR_TOLERANCE + 0.5)
    ok, text = verdict([_point(8, 80.0), _point(64, 640.0), _point(512, steep)])
    assert not ok
    assert "whole path of one heartbeat" in text and "64 -> 512" in text
    assert verdict([]) == (False, "not measured")


def test_extrapolation_takes_the_cautious_reading() -> None:
    assert extrapolate({64: 64.0, 512: 512.0}, 800) == pytest.approx(800.0)
    # sub-linear so far: proportional scaling is the higher, so it is taken
    assert extrapolate({64: 100.0, 512: 512.0}, 800) == pytest.approx(800.0)
    # steeper than proportional: the line through the two largest sizes
    assert extrapolate({64: 10.0, 512: 1000.0}, 800) > 1000.0 * 800 / 512
    assert math.isnan(extrapolate({}, 800))


def test_fleet_limits_and_their_paragraph() -> None:
    r = ScaleResult(ScaleSettings(), [_point(64, 640.0), _point(512, 5120.0)])
    f = fleet_limits(
        r,
        hosts=100,
        heartbeat_s=10.0,
        writes_per_replica_s=0.2,
        consensus_ceiling_per_s=300.0,
        consensus_nodes=7,
        consensus_replicas=14,
    )
    assert f is not None
    assert f.replicas == 800
    assert f.heartbeat_per_s == pytest.approx(80.0)
    assert f.traffic_per_s == pytest.approx(160.0)
    assert f.path_ms == pytest.approx(8.0)
    assert f.apply_ceiling_per_s == pytest.approx(125.0)
    assert f.heartbeat_cpu == pytest.approx(0.64)
    text = limits_paragraph(f)
    assert "800 replicas" in text and "125 commands/s" in text and "300 commits/s" in text
    assert fleet_limits(ScaleResult(ScaleSettings())) is None
    assert limits_paragraph(None) == "Not measured."


def test_render_has_a_column_per_size_and_the_verdict() -> None:
    r = ScaleResult(ScaleSettings(), [_point(8, 80.0), _point(64, 640.0)])
    text = render(r, limits="LIMITS")
    assert "| | 8 replicas | 64 replicas |" in text
    assert "grows at most linearly" in text
    assert text.endswith("LIMITS")
    assert render(ScaleResult(ScaleSettings(), error="boom")) == "Not measured: boom."


def test_limits_from_reads_the_live_clusters_traffic_window_and_ceiling() -> None:
    from bench.cluster import ClusterResult, ClusterSettings
    from bench.cluster.ceiling import CeilingSample
    from bench.cluster.writes import WriteWindow
    from bench.scale_report import limits_from

    cluster = ClusterResult(ClusterSettings(nodes=7))
    idle = WriteWindow("idle", 10.0, 5, 14)
    busy = WriteWindow("4 req/s through each router", 10.0, 28, 14)
    busy.requests = 100
    cluster.windows = [idle, busy]
    cluster.ceilings = [CeilingSample(4, 5.0, 500, 500), CeilingSample(16, 5.0, 1000, 1000)]
    r = ScaleResult(ScaleSettings(), [_point(64, 640.0), _point(512, 5120.0)])
    text = limits_from(r, cluster)
    assert "160/s" in text  # 0.2 writes/s per replica x 800 replicas
    assert "200 commits/s" in text  # the higher ceiling
    assert "7-node cluster" in text and "14 replicas" in text
    assert "heartbeats alone" in limits_from(r, None)
