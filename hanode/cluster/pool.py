"""The router's pool view in a cluster: a PoolSnapshot built from each replicated state.

Weights come from the leader's planner. Role, drain, health and node loss act at once, without
waiting for the planner: a replica that may not serve (``may_serve``) in the replicated state
gets weight 0 on every router as soon as that state is applied. Before the leader has assigned
a weight, the same pure policy computes one locally.

Replicas on this node keep the URL from the local config (often loopback); the replicated spec
carries the advertised address that other nodes dial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from hanode.cluster.view import ClusterView
from hanode.policies.weights import WeightInput, WeightThresholds, compute_weights
from hanode.pool.replica import ReplicaSpec, may_serve
from hanode.pool.snapshot import PoolSnapshot, ReplicaState


def snapshot_from_view(
    view: ClusterView,
    thresholds: WeightThresholds,
    local: Mapping[str, ReplicaSpec] | None = None,
) -> PoolSnapshot:
    inputs = {
        name: WeightInput(r.spec.model, r.role, r.admin, r.observation)
        for name, r in view.replicas.items()
    }
    computed = compute_weights(inputs, thresholds)
    lost = view.lost_nodes
    local = local or {}
    states = {}
    for name, rec in view.replicas.items():
        eligible = may_serve(rec.role, rec.admin, rec.observation, rec.spec.node in lost)
        weight = view.weights.get(name, computed[name]) if eligible else 0.0
        if eligible and weight <= 0.0 < computed[name]:
            weight = computed[name]  # the leader's weight predates this replica's recovery
        spec = rec.spec
        own = local.get(name)
        if own is not None and own.node == spec.node:
            spec = replace(spec, url=own.url)
        states[name] = ReplicaState(spec, rec.role, rec.admin, rec.observation, weight)
    return PoolSnapshot.build(view.index, states)


class ClusterPool:
    """PoolView fed by the cluster store (``update`` is called on the event loop)."""

    def __init__(
        self, thresholds: WeightThresholds, local: Mapping[str, ReplicaSpec] | None = None
    ) -> None:
        self._thresholds = thresholds
        self._local = dict(local or {})
        self.snapshot = PoolSnapshot()

    def update(self, view: ClusterView) -> None:
        self.snapshot = snapshot_from_view(view, self._thresholds, self._local)
