"""Divergence is judged against a majority of the members, never against one node."""

from __future__ import annotations

from types import MappingProxyType

from hanode.cluster.checkpoints import divergence
from hanode.cluster.view import ClusterView, NodeRecord


def view(reports: dict[str, str], nodes: int = 3, cid: str = "c1") -> ClusterView:
    return ClusterView(
        nodes=MappingProxyType({f"n{i}": NodeRecord(f"n{i}") for i in range(1, nodes + 1)}),
        checkpoint_id=cid,
        checkpoint_reports=MappingProxyType(reports),
    )


def test_a_node_out_of_step_with_the_majority_has_diverged() -> None:
    why = divergence(view({"n1": "bad", "n2": "good", "n3": "good"}), "bad")
    assert why is not None and "reported by 2 of 3 nodes" in why
    assert divergence(view({"n1": "bad", "n2": "good", "n3": "good"}), "good") is None


def test_no_verdict_without_a_majority_or_a_digest_of_our_own() -> None:
    assert divergence(view({"n2": "good"}), "bad") is None  # 1 of 3 is not a majority
    assert divergence(view({"n1": "a", "n2": "b", "n3": "c"}), "a") is None
    assert divergence(view({"n1": "x", "n2": "good", "n3": "good"}), None) is None
    assert divergence(view({"n2": "good", "n3": "good"}, cid=""), "bad") is None
    assert divergence(view({"n2": "g", "n3": "g"}, nodes=4), "bad") is None  # 2 of 4
