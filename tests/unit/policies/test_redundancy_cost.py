"""`hanodectl plan`'s arithmetic against the seed's figures (issue 14)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.redundancy_cost import Placement, plan_model


def _replicas(active: int, standby: int, hosts: int | None = None) -> list[Placement]:
    hosts = hosts or active + standby
    roles = ["active"] * active + ["standby"] * standby
    return [Placement(f"r{i}", f"h{i % hosts}", role) for i, role in enumerate(roles)]


def test_primary_standby_costs_200_percent_at_50_percent_utilization() -> None:
    plan = plan_model("m", "primary_standby", _replicas(1, 1), gpu_price_per_hour=2.5)
    assert (plan.active, plan.standby) == (1, 1)
    assert round(plan.cost_pct) == 200 and round(plan.utilization_pct) == 50
    assert plan.price_per_hour == 5.0
    worst = plan.worst
    assert worst is not None and (worst.serving, worst.needed, worst.spare) == (1, 1, 0)


def test_n_plus_1_with_3_active_and_1_standby_costs_133_percent_at_75() -> None:
    plan = plan_model("m", "n_plus_1", _replicas(3, 1))
    assert round(plan.cost_pct) == 133 and round(plan.utilization_pct) == 75
    assert plan.price_per_hour is None
    # Any one host lost: the standby covers it (3 of 3 serving), no spare left.
    assert all((loss.serving, loss.spare) == (3, 0) for loss in plan.losses if loss.node != "h3")
    standby_host = next(loss for loss in plan.losses if loss.node == "h3")
    assert (standby_host.serving, standby_host.spare) == (3, 0)


def test_active_active_costs_100_percent_and_a_loss_is_lost_capacity() -> None:
    plan = plan_model("m", "active_active", _replicas(4, 0))
    assert round(plan.cost_pct) == 100 and round(plan.utilization_pct) == 100
    worst = plan.worst
    assert worst is not None and worst.serving == 3 and worst.capacity_pct == 75.0


def test_two_replicas_on_one_host_make_it_the_worst_loss() -> None:
    replicas = [
        Placement("a", "h1", "active"),
        Placement("b", "h1", "active"),
        Placement("c", "h2", "active"),
        Placement("d", "h3", "standby"),
    ]
    plan = plan_model("m", "n_plus_1", replicas)
    worst = plan.worst
    assert worst is not None and worst.node == "h1"
    assert (worst.serving, worst.needed, worst.spare) == (2, 3, 0)


@given(st.integers(1, 8), st.integers(0, 8), st.integers(1, 6))
def test_cost_and_utilization_are_inverse(active: int, standby: int, hosts: int) -> None:
    plan = plan_model("m", "n_plus_1", _replicas(active, standby, hosts))
    assert abs(plan.cost_pct * plan.utilization_pct - 10_000) < 1e-6
    assert plan.cost_pct == 100.0 * (active + standby) / active
    for loss in plan.losses:
        assert 0 <= loss.serving <= loss.needed == active and loss.spare >= 0
