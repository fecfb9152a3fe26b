"""The router's pool in a cluster: replicated role, drain and health act at once."""

from __future__ import annotations

from typing import Any

import pytest

from hanode.cluster.document import empty_doc
from hanode.cluster.pool import ClusterPool, snapshot_from_view
from hanode.cluster.state import apply
from hanode.cluster.view import freeze
from hanode.policies.weights import WeightThresholds
from hanode.pool.snapshot import PoolSnapshot
from tests.unit.cluster.helpers import MODEL, replica, view

T = WeightThresholds()
LEADER = {"r1": 1.0, "r2": 1.0, "r3": 1.0}


@pytest.mark.parametrize(
    "opts",
    [
        {"admin": "drained"},
        {"role": "standby"},
        {"level": 0},  # DOWN
        {"level": 1},  # UNREADY
        {"gpu_removed": True, "gpu": 0.96},  # the checker's GPU gate removed it
    ],
    ids=["drained", "standby", "down", "unready", "gpu_removed"],
)
def test_ineligible_replica_gets_zero_at_once_whatever_the_leader_said(
    opts: dict[str, Any],
) -> None:
    v = view(("r1", opts), ("r2", {}), ("r3", {}), weights=LEADER)
    snap = snapshot_from_view(v, T)
    assert snap.replicas["r1"].weight == 0.0
    assert snap.routes[MODEL].names and "r1" not in snap.routes[MODEL].names
    assert set(snap.routes[MODEL].names) == {"r2", "r3"}


def test_leader_weights_are_used_for_eligible_replicas() -> None:
    v = view(("r1", {}), ("r2", {}), weights={"r1": 0.3, "r2": 0.9})
    snap = snapshot_from_view(v, T)
    assert snap.replicas["r1"].weight == 0.3 and snap.replicas["r2"].weight == 0.9
    assert snap.version == v.index


def test_without_a_leader_weight_the_local_policy_decides() -> None:
    v = view(("r1", {}), ("r2", {"gpu": 0.92}), weights={})
    snap = snapshot_from_view(v, T)
    assert snap.replicas["r1"].weight == 1.0
    assert 0.0 < snap.replicas["r2"].weight < 0.5


def test_a_stale_zero_from_the_leader_does_not_hide_a_recovered_replica() -> None:
    v = view(("r1", {}), ("r2", {}), weights={"r1": 0.0, "r2": 1.0})
    snap = snapshot_from_view(v, T)
    assert snap.replicas["r1"].weight == 1.0
    assert set(snap.routes[MODEL].names) == {"r1", "r2"}


def test_state_carries_role_admin_and_observation() -> None:
    v = view(("r1", {"admin": "drained", "gpu": 0.7}), ("r2", {"role": "standby"}))
    snap = snapshot_from_view(v, T)
    assert snap.replicas["r1"].admin.value == "drained"
    assert snap.replicas["r1"].observation.gpu_mem_frac == 0.7
    assert snap.replicas["r2"].role.value == "standby"
    assert snap.models == (MODEL,) and snap.served_models() == ()


def test_cluster_pool_publishes_each_applied_state() -> None:
    pool = ClusterPool(T)
    assert isinstance(pool.snapshot, PoolSnapshot) and pool.snapshot.replicas == {}
    doc = empty_doc()
    replica(doc, "r1")
    replica(doc, "r2")
    pool.update(freeze(doc, 1))
    assert pool.snapshot.version == 1
    assert set(pool.snapshot.routes[MODEL].names) == {"r1", "r2"}
    # a drain applied by consensus takes r1 out on the very next snapshot
    apply(doc, {"op": "set_admin", "replicas": ["r1"], "admin": "drained", "ts": 9.0})
    pool.update(freeze(doc, 2))
    assert list(pool.snapshot.routes[MODEL].names) == ["r2"]
    assert pool.snapshot.version == 2
