"""Node leases: which nodes the leader should declare lost or back (pure).

The leader hears from every peer many times a second (Raft's append-entries answers) and
measures the silence on its own monotonic clock, so no two hosts' clocks are ever compared. A
node silent for longer than the lease is lost: its replicas leave routing on every router and
the planner restores capacity elsewhere. A new leader judges nobody until it has led for a
whole lease, so every node gets a fresh lease from it.
"""

from __future__ import annotations

from collections.abc import Mapping

from hanode.cluster.document import Command
from hanode.cluster.view import ClusterView


def plan_leases(
    view: ClusterView,
    silence: Mapping[str, float],
    lease_s: float,
    leader: str,
) -> list[Command]:
    """``silence``: seconds since each peer (by raft address) last answered the leader."""
    out: list[Command] = []
    for name, node in sorted(view.nodes.items()):
        if name == leader or not node.raft:
            continue
        quiet = silence.get(node.raft)
        if quiet is None:
            continue  # not a Raft member (any more): membership changes handle it
        if quiet > lease_s and not node.lost:
            out.append({"op": "node_lost", "name": name, "silent_s": round(quiet, 1)})
        elif quiet <= lease_s and node.lost:
            out.append({"op": "node_back", "name": name})
    return out
