"""`hanodectl plan`: per model, its redundancy mode, replicas by role, what the mode costs and
what losing one host would leave serving.

Replicas, roles and hosts come from the live status (any node; a read-only token is enough);
each model's redundancy mode and GPU price from the [[models]] tables of a node's config file
(``--config``, the same on every node), the price also from ``--gpu-price``. The arithmetic is
:mod:`hanode.policies.redundancy_cost`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hanode.policies.redundancy_cost import ModelPlan, Placement, plan_model
from hanode.settings.sections_cluster import REDUNDANCY_MODES

__all__ = ["ModelSettings", "model_settings", "plans", "plans_json", "plans_table"]

DEFAULT_MODE = "n_plus_1"  # [[models]] redundancy's default

ModelSettings = Mapping[str, tuple[str, float | None]]  # model -> (mode, GPU price per hour)


class PlanError(Exception):
    """One line for the operator."""


def model_settings(path: Path | None) -> dict[str, tuple[str, float | None]]:
    """Each [[models]] entry's redundancy mode and GPU price from a hanode config file."""
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PlanError(f"{path}: {' '.join(str(exc).split())}") from None
    out: dict[str, tuple[str, float | None]] = {}
    for i, entry in enumerate(doc.get("models", [])):
        name, mode = entry.get("name"), entry.get("redundancy", DEFAULT_MODE)
        price = entry.get("gpu_price_per_hour")
        if not isinstance(name, str) or mode not in REDUNDANCY_MODES:
            raise PlanError(f"{path}: [[models]][{i}]: a name and a known redundancy are needed")
        if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)):
            raise PlanError(f"{path}: [[models]][{i}].gpu_price_per_hour must be a number")
        out[name] = (mode, None if price is None else float(price))
    return out


def plans(
    status: Mapping[str, Any], settings: ModelSettings, price: float | None = None
) -> list[ModelPlan]:
    by_model: dict[str, list[Placement]] = {}
    for r in status.get("replicas", []):
        role = "active" if r.get("role") == "active" else "standby"
        by_model.setdefault(r["model"], []).append(Placement(r["name"], r.get("node", ""), role))
    out = []
    for model in sorted(by_model):
        mode, model_price = settings.get(model, (DEFAULT_MODE, None))
        out.append(
            plan_model(model, mode, by_model[model], price if price is not None else model_price)
        )
    return out


def _loss_text(plan: ModelPlan) -> str:
    worst = plan.worst
    if worst is None:
        return "-"
    if len({loss.node for loss in plan.losses}) == 1:
        return f"{worst.node} holds every replica: 0 of {worst.needed} serving"
    text = f"{worst.node}: {worst.serving} of {worst.needed} active serving"
    if worst.serving < worst.needed:
        text += f" ({worst.capacity_pct:.0f}% capacity)"
    return text + f", {worst.spare} spare"


def plans_table(items: Sequence[ModelPlan]) -> str:
    if not items:
        return "no replicas"
    rows = [
        [
            "MODEL",
            "MODE",
            "ACTIVE",
            "STANDBY",
            "COST",
            "UTILIZATION",
            "PRICE/H",
            "LOSING ONE HOST (worst)",
        ]
    ]
    for p in items:
        rows.append(
            [
                p.model,
                p.mode,
                str(p.active),
                str(p.standby),
                f"{p.cost_pct:.0f}%",
                f"{p.utilization_pct:.0f}%",
                "-" if p.price_per_hour is None else f"{p.price_per_hour:.2f}",
                _loss_text(p),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in rows
    )


def plans_json(items: Sequence[ModelPlan]) -> dict[str, Any]:
    return {
        "models": [
            {
                "model": p.model,
                "mode": p.mode,
                "active": p.active,
                "standby": p.standby,
                "gpus": p.gpus,
                "cost_pct": round(p.cost_pct, 1),
                "utilization_pct": round(p.utilization_pct, 1),
                "price_per_hour": p.price_per_hour,
                "losing_one_host": [
                    {
                        "node": loss.node,
                        "serving": loss.serving,
                        "needed": loss.needed,
                        "spare": loss.spare,
                        "capacity_pct": round(loss.capacity_pct, 1),
                    }
                    for loss in p.losses
                ],
            }
            for p in items
        ]
    }
