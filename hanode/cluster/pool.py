"""The router's pool view in a cluster: a PoolSnapshot built from each replicated state.

Weights come from the leader's planner. Role, drain and health act at once, without waiting
for the planner: a replica that is drained, standby, not serving or GPU-removed in the
replicated state gets weight 0 on every router as soon as that state is applied. Before the
leader has assigned a weight, the same pure policy computes one locally.
"""

from __future__ import annotations

from hanode.cluster.state import ClusterView
from hanode.policies.weights import WeightInput, WeightThresholds, compute_weights
from hanode.pool.replica import AdminState, Role
from hanode.pool.snapshot import PoolSnapshot, ReplicaState


def snapshot_from_view(view: ClusterView, thresholds: WeightThresholds) -> PoolSnapshot:
    inputs = {
        name: WeightInput(r.spec.model, r.role, r.admin, r.observation)
        for name, r in view.replicas.items()
    }
    local = compute_weights(inputs, thresholds)
    states = {}
    for name, rec in view.replicas.items():
        eligible = (
            rec.role is Role.ACTIVE
            and rec.admin is AdminState.ENABLED
            and rec.observation.level.serving
            and not rec.observation.gpu_removed
        )
        weight = view.weights.get(name, local[name]) if eligible else 0.0
        if eligible and weight <= 0.0 < local[name]:
            weight = local[name]  # the leader's weight predates this replica's recovery
        states[name] = ReplicaState(rec.spec, rec.role, rec.admin, rec.observation, weight)
    return PoolSnapshot.build(view.index, states)


class ClusterPool:
    """PoolView fed by the cluster store (``update`` is called on the event loop)."""

    def __init__(self, thresholds: WeightThresholds) -> None:
        self._thresholds = thresholds
        self.snapshot = PoolSnapshot()

    def update(self, view: ClusterView) -> None:
        self.snapshot = snapshot_from_view(view, self._thresholds)
