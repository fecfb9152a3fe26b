"""What a redundancy mode costs: GPUs paid for against GPUs serving, and what losing one host
leaves serving (`hanodectl plan`).

Pure arithmetic over replica placements. Cost is the GPUs a model holds relative to those its
steady-state traffic runs on (its active replicas); utilization is the inverse. The seed's
figures follow: primary/standby (1 active, 1 standby) costs 200% at 50% utilization; N+1 with
3 active and 1 standby 133% at 75%; active-active 100%, every replica serving with weighted
distribution (losing a host then leaves less capacity rather than an idle spare to promote).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["HostLoss", "ModelPlan", "Placement", "plan_model"]


@dataclass(frozen=True, slots=True)
class Placement:
    """One replica of the model: where it runs and its role now."""

    name: str
    node: str
    role: str  # "active" | "standby"
    gpus: int = 1


@dataclass(frozen=True, slots=True)
class HostLoss:
    """The model after ``node`` is lost and the planner has promoted what it can."""

    node: str
    serving: int  # active replicas after promotions
    needed: int  # active replicas before the loss
    spare: int  # standbys left to cover a further loss

    @property
    def capacity_pct(self) -> float:
        return 100.0 * self.serving / self.needed if self.needed else 0.0


@dataclass(frozen=True, slots=True)
class ModelPlan:
    model: str
    mode: str
    active: int
    standby: int
    gpus: int
    cost_pct: float  # GPUs held / GPUs serving
    utilization_pct: float  # GPUs serving / GPUs held
    price_per_hour: float | None  # all of the model's GPUs, at the configured price
    losses: tuple[HostLoss, ...]  # one per host the model runs on, worst first

    @property
    def worst(self) -> HostLoss | None:
        return self.losses[0] if self.losses else None


def _loss(node: str, replicas: Sequence[Placement], needed: int) -> HostLoss:
    left = [r for r in replicas if r.node != node]
    active = sum(1 for r in left if r.role == "active")
    standby = len(left) - active
    promoted = min(standby, max(0, needed - active))
    return HostLoss(node, active + promoted, needed, standby - promoted)


def plan_model(
    model: str,
    mode: str,
    replicas: Sequence[Placement],
    gpu_price_per_hour: float | None = None,
) -> ModelPlan:
    """The plan of one model from its replicas' roles and hosts."""
    active = [r for r in replicas if r.role == "active"]
    standby = len(replicas) - len(active)
    held = sum(r.gpus for r in replicas)
    serving = sum(r.gpus for r in active)
    cost = 100.0 * held / serving if serving else 0.0
    utilization = 100.0 * serving / held if held else 0.0
    needed = len(active)
    losses = sorted(
        (_loss(node, replicas, needed) for node in sorted({r.node for r in replicas})),
        key=lambda loss: (loss.serving - loss.needed, loss.spare, loss.node),
    )
    price = None if gpu_price_per_hour is None else held * gpu_price_per_hour
    return ModelPlan(
        model, mode, len(active), standby, held, cost, utilization, price, tuple(losses)
    )
