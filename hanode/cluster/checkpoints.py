"""Has this node's state diverged from the cluster's? (pure)

Raft should make that impossible, but a consensus library can lose or re-apply entries across
crashes (pysyncobj logs "state machine may have diverged" when it truncates entries it had
already applied). So the leader marks a checkpoint in the log now and then, every node reports
the digest of its state right after applying it, and a node whose digest differs from one that
a majority of the members reported knows its state is wrong, and takes the cluster's again.
"""

from __future__ import annotations

from collections import Counter

from hanode.cluster.view import ClusterView


def divergence(view: ClusterView, own_digest: str | None) -> str | None:
    """Why this node's state is not the majority's at the last checkpoint; None when it is,
    or when that cannot be told yet (no majority agrees, or this node's digest is unknown)."""
    if own_digest is None or not view.checkpoint_id:
        return None
    members = max(len(view.nodes), 1)
    for digest, count in Counter(view.checkpoint_reports.values()).most_common(1):
        if count > members / 2 and digest != own_digest:
            return (
                f"state digest {own_digest} at checkpoint {view.checkpoint_id} differs from "
                f"{digest}, reported by {count} of {members} nodes"
            )
    return None
