"""The router's pool view in a cluster: a PoolSnapshot built from each replicated state.

Weights come from the leader's planner. Role, drain, health and node loss act at once, without
waiting for the planner: a replica that may not serve (``may_serve``) in the replicated state
gets weight 0 on every router as soon as that state is applied. Before the leader has assigned
a weight, the same pure policy computes one locally.

Replicas on this node keep the URL from the local config (often loopback); the replicated spec
carries the advertised address that other nodes dial.

Slow start: a replica that comes (back) into service after this router started gets its weight
times ``policies.slow_start`` 's factor, from the moment this router first saw it eligible (its
own monotonic clock, passed in: nothing here reads a clock). The runtime refreshes the snapshot
while a ramp runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from hanode.cluster.view import ClusterView
from hanode.policies.slow_start import SlowStart, ramping
from hanode.policies.weights import WeightInput, WeightThresholds, compute_weights
from hanode.pool.replica import ReplicaSpec
from hanode.pool.snapshot import PoolSnapshot, ReplicaState


def snapshot_from_view(
    view: ClusterView,
    thresholds: WeightThresholds,
    local: Mapping[str, ReplicaSpec] | None = None,
    ramp: Mapping[str, float] | None = None,
) -> PoolSnapshot:
    """``ramp``: slow-start factors (name -> factor below 1) of replicas still ramping up."""
    inputs = {
        name: WeightInput(r.spec.model, r.role, r.admin, r.observation)
        for name, r in view.replicas.items()
    }
    computed = compute_weights(inputs, thresholds)
    lost = view.lost_nodes
    local = local or {}
    states = {}
    for name, rec in view.replicas.items():
        eligible = rec.may_serve(lost)
        weight = view.weights.get(name, computed[name]) if eligible else 0.0
        if eligible and weight <= 0.0 < computed[name]:
            weight = computed[name]  # the leader's weight predates this replica's recovery
        if eligible and ramp:
            weight *= ramp.get(name, 1.0)
        spec = rec.spec
        own = local.get(name)
        if own is not None and own.node == spec.node:
            spec = replace(spec, url=own.url)
        states[name] = ReplicaState(spec, rec.role, rec.admin, rec.observation, weight)
    return PoolSnapshot.build(view.index, states)


class ClusterPool:
    """PoolView fed by the cluster store (``update`` is called on the event loop)."""

    def __init__(
        self,
        thresholds: WeightThresholds,
        local: Mapping[str, ReplicaSpec] | None = None,
        slow_start: SlowStart | None = None,
    ) -> None:
        self._thresholds = thresholds
        self._local = dict(local or {})
        self._slow_start = slow_start or SlowStart(0.0)
        self._view: ClusterView | None = None
        self._eligible: set[str] | None = None  # None until the first view
        self._since: dict[str, float] = {}  # ramping replicas: when they became eligible
        self.snapshot = PoolSnapshot()

    def update(self, view: ClusterView, now: float = 0.0) -> None:
        lost = view.lost_nodes
        eligible = {n for n, r in view.replicas.items() if r.may_serve(lost)}
        if self._eligible is not None and self._slow_start.window_s > 0.0:
            for name in eligible - self._eligible:
                self._since[name] = now  # back in service: ramp up from here
        for name in [n for n in self._since if n not in eligible]:
            del self._since[name]
        self._eligible = eligible
        self._view = view
        self.refresh(now)

    def refresh(self, now: float) -> bool:
        """Rebuild the snapshot for ``now``; True while some replica is still ramping up."""
        if self._view is None:
            return False
        ramp = ramping(self._since, now, self._slow_start)
        for name in [n for n in self._since if n not in ramp]:
            del self._since[name]
        self.snapshot = snapshot_from_view(self._view, self._thresholds, self._local, ramp)
        return bool(ramp)

    def ramp(self, now: float) -> dict[str, float]:
        """Slow-start factors now (name -> factor below 1), for status and tests."""
        return ramping(self._since, now, self._slow_start)
