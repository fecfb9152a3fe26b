"""Slow start in the cluster pool: a replica back in service ramps up; the ones serving
when the router started do not; asleep or restarting replicas get no traffic at all."""

from __future__ import annotations

import pytest

from hanode.cluster.document import empty_doc
from hanode.cluster.pool import ClusterPool
from hanode.cluster.state import apply
from hanode.cluster.view import freeze
from hanode.policies.slow_start import SlowStart
from hanode.policies.weights import WeightThresholds
from tests.unit.cluster.helpers import replica, spec


def test_a_replica_back_in_service_ramps_up_over_the_window() -> None:
    doc = empty_doc()
    replica(doc, "a-0", gpu=None)
    replica(doc, "a-1", gpu=None)
    pool = ClusterPool(WeightThresholds(), slow_start=SlowStart(10.0))
    pool.update(freeze(doc, 1), now=0.0)
    assert {n: s.weight for n, s in pool.snapshot.replicas.items()} == {"a-0": 1.0, "a-1": 1.0}
    apply(doc, {"op": "observe", "replica": "a-1", "obs": {"level": 0}, "ts": 3.0})
    pool.update(freeze(doc, 2), now=1.0)
    assert pool.snapshot.replicas["a-1"].weight == 0.0
    apply(doc, {"op": "observe", "replica": "a-1", "obs": {"level": 3}, "ts": 4.0})
    pool.update(freeze(doc, 3), now=2.0)
    assert pool.snapshot.replicas["a-1"].weight == pytest.approx(0.1)
    assert pool.refresh(7.0) is True
    assert pool.snapshot.replicas["a-1"].weight == pytest.approx(0.5)
    assert pool.refresh(12.0) is False  # the ramp is over
    assert pool.snapshot.replicas["a-1"].weight == 1.0
    assert pool.snapshot.replicas["a-0"].weight == 1.0


def test_asleep_or_restarting_replicas_get_no_traffic_whatever_their_last_health() -> None:
    doc = empty_doc()
    apply(doc, {"op": "register_replica", "spec": {**spec("a-0"), "actuated": True}, "ts": 1})
    apply(doc, {"op": "observe", "replica": "a-0", "obs": {"level": 3}, "ts": 2.0})
    pool = ClusterPool(WeightThresholds(), slow_start=SlowStart(0.0))
    pool.update(freeze(doc, 1))
    assert pool.snapshot.replicas["a-0"].weight == 1.0
    sleep = {"op": "set_desired", "replica": "a-0", "desired": "sleep", "by": "operator"}
    apply(doc, {**sleep, "ts": 3.0, "v": 3})
    pool.update(freeze(doc, 2))
    assert pool.snapshot.replicas["a-0"].weight == 0.0  # at once, before the node acts
    apply(doc, {**sleep, "desired": "run", "ts": 4.0, "v": 3})
    report = {"op": "report_process", "replica": "a-0", "node": "n1", "ts": 5.0, "v": 3}
    apply(doc, {**report, "state": "sleeping"})
    pool.update(freeze(doc, 3))
    assert pool.snapshot.replicas["a-0"].weight == 0.0  # still asleep: wake not done yet
    apply(doc, {**report, "state": "backoff"})
    pool.update(freeze(doc, 4))
    assert pool.snapshot.replicas["a-0"].weight == 0.0
    apply(doc, {**report, "state": "running"})
    pool.update(freeze(doc, 5))
    assert pool.snapshot.replicas["a-0"].weight == 1.0
