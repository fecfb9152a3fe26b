"""Build replicated documents and views the way the state machine does (through ``apply``)."""

from __future__ import annotations

from typing import Any

from hanode.cluster.document import Doc, empty_doc
from hanode.cluster.state import apply
from hanode.cluster.view import ClusterView, freeze

MODEL = "m"


def spec(name: str, model: str = MODEL, role: str = "active", node: str = "n1") -> dict[str, Any]:
    return {
        "name": name,
        "model": model,
        "url": "http://127.0.0.1:8000",
        "engine": "vllm",
        "role": role,
        "gpu": None,
        "node": node,
    }


def replica(
    doc: Doc,
    name: str,
    *,
    model: str = MODEL,
    role: str = "active",
    level: int = 3,
    gpu: float | None = 0.5,
    admin: str = "enabled",
    promoted: bool = False,
    gpu_removed: bool = False,
) -> None:
    """Register ``name`` and bring it to the wanted state through commands (ts fixed)."""
    apply(doc, {"op": "register_replica", "spec": spec(name, model, role), "ts": 1.0})
    obs: dict[str, Any] = {"level": level}
    if gpu is not None:
        obs["gpu_mem_frac"] = gpu
    if gpu_removed:
        obs["gpu_removed"] = True
    apply(doc, {"op": "observe", "replica": name, "obs": obs, "ts": 2.0})
    if admin != "enabled":
        apply(doc, {"op": "set_admin", "replicas": [name], "admin": admin, "ts": 3.0})
    if promoted:  # as the planner does it: standby -> active, planned
        doc["replicas"][name]["role"] = "standby"
        apply(
            doc,
            {"op": "set_role", "replica": name, "role": "active", "planned": True, "ts": 4.0},
        )


def view(
    *replicas: tuple[str, dict[str, Any]], weights: dict[str, float] | None = None
) -> ClusterView:
    doc = empty_doc()
    for name, opts in replicas:
        replica(doc, name, **opts)
    if weights is not None:
        apply(doc, {"op": "set_weights", "weights": weights, "ts": 5.0})
    return freeze(doc, 42)
