"""The planner on reserving engines: the pressure a checker reports for a vLLM fleet at idle is its
KV use, so no standby is promoted; the device reading (90%) would have promoted one."""

from __future__ import annotations

from hanode.cluster.planner import ModelPolicy, PlannerMemory, PlannerSettings, plan_roles
from hanode.policies.memory import memory_pressure, reserving
from hanode.policies.weights import WeightThresholds
from tests.unit.cluster.helpers import MODEL, view

SETTINGS = PlannerSettings(WeightThresholds(), gpu_prepare=0.80, demote_hold_s=30.0)
POLICY = {MODEL: ModelPolicy(MODEL, 1)}
DEVICE = 0.905  # NVML on a vLLM host at --gpu-memory-utilization 0.9


def promotions(kv: float | None, reserves: bool) -> list[dict[str, object]]:
    pressure, _ = memory_pressure(reserving(reserves, 0.9 if reserves else None), kv, DEVICE)
    v = view(
        ("r1", {"gpu": pressure}),
        ("r2", {"gpu": pressure}),
        ("s1", {"role": "standby", "gpu": pressure}),
    )
    return plan_roles(v, POLICY, SETTINGS, PlannerMemory(), 100.0)


def test_idle_reserving_fleet_promotes_nothing() -> None:
    assert promotions(kv=0.0, reserves=True) == []


def test_the_same_fleet_judged_by_device_memory_would_promote() -> None:
    """What the old rule did: every replica "at 90%" at idle, a standby promoted."""
    [cmd] = promotions(kv=0.0, reserves=False)
    assert cmd["replica"] == "s1" and "prepare capacity" in str(cmd["reason"])


def test_kv_at_the_prepare_mark_promotes() -> None:
    [cmd] = promotions(kv=0.85, reserves=True)
    assert cmd["replica"] == "s1" and "at 85%" in str(cmd["reason"])
