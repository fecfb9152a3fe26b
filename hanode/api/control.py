"""The control backend: what the gRPC API (and hanodectl) can ask of a node.

A narrow interface so the API layer knows nothing about consensus. Reads answer from local
state and say how fresh it is; writes go to the leader through consensus. A consensus timeout
is an *unknown outcome* (the write may still apply): commands are idempotent, so the caller can
simply repeat it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Protocol


class ControlErrorCode(enum.StrEnum):
    NOT_FOUND = "not_found"  # unknown replica / node / member
    INVALID = "invalid"  # malformed argument
    FAILED_PRECONDITION = "failed_precondition"  # e.g. demoting the last active replica
    UNAVAILABLE = "unavailable"  # no quorum / no leader reachable
    UNKNOWN_OUTCOME = "unknown_outcome"  # consensus timed out: may or may not have applied
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"  # a read-only token asked for a write


class ControlError(Exception):
    def __init__(self, code: ControlErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ControlBackend(Protocol):
    """Implemented by the daemon (cluster mode) and by test fakes."""

    node_name: str

    def status(self) -> dict[str, Any]:
        """The status document (see ``hanode.status.status_document``) plus ``freshness``:
        ``{"has_quorum": bool, "leader": str | None, "last_applied_age_s": float,
        "commit_index": int}``."""
        ...

    async def drain(
        self, replica: str | None = None, node: str | None = None, force: bool = False
    ) -> list[str]:
        """Drain one replica, or every replica of a node; returns the replicas affected.
        Refused (FAILED_PRECONDITION) when it would leave a model with no serving replica,
        unless ``force``."""
        ...

    async def undrain(self, replica: str | None = None, node: str | None = None) -> list[str]: ...

    async def promote(self, replica: str) -> None: ...

    async def demote(self, replica: str) -> None: ...

    def breakers(self) -> list[dict[str, Any]]:
        """Open/half-open breakers: replicated (cluster-wide) and this node's local ones.
        Each: ``{"replica", "failure_class", "state", "until", "source": "cluster"|"local",
        "node"}``."""
        ...

    async def reset_breaker(self, replica: str) -> None: ...

    def events(self, after_seq: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Cluster events after ``after_seq``, oldest first; with ``limit`` only the newest
        ``limit`` of them. Each: ``{"seq", "ts", "kind", "subject", "message", "fields"}``."""
        ...

    def subscribe_events(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``callback`` (on the event loop) for each new event; returns an unsubscribe."""
        ...

    def members(self) -> list[dict[str, Any]]:
        """Raft members: ``{"address", "node" (name or ""), "self": bool, "leader": bool,
        "connected": bool}``."""
        ...

    async def add_member(self, address: str) -> None: ...

    def incidents(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` incidents, oldest first. Each: ``{"id", "model", "replica",
        "open", "detected", "restored", "closed", "mttr_s", "duration_s", "timeline": [{"ts",
        "what", "message"}]}`` (times: the leader's wall clock; None: not yet)."""
        ...

    def slo(self) -> list[dict[str, Any]]:
        """This router's SLO figures per model and class: ``{"model", "request_class",
        "target", "requests_1h", "success_rate_1h", "availability_1h", "p95_latency_s",
        "mttr_s", "burn": {window: rate}, "alerts": [pair]}`` (None: no data yet)."""
        ...

    async def restart(self, replica: str, force: bool = False) -> int:
        """Restart a replica through its node (clears a crash loop); returns the request's
        generation. Refused for the last serving replica of a model unless ``force``."""
        ...

    async def sleep(self, replica: str, force: bool = False) -> None:
        """Put a replica to sleep (engine sleep mode); the last serving one needs ``force``."""
        ...

    async def wake(self, replica: str) -> None: ...

    async def reload(
        self,
        model: str,
        max_unavailable: int = 1,
        surge: bool = False,
        drain_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Start a rolling reload of ``model`` (or answer the one running); returns it:
        ``{"id", "model", "state", "waiting", "reason", "surge_replica", "serving",
        "replicas": [{"name", "step", "reason", "inflight", "unavailable_s", "serving"}],
        ...}`` (see ``cluster.rollout.rollout_doc``). A reload is an admin action."""
        ...

    def reload_status(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every model's latest rollout, or ``model``'s (empty: none yet)."""
        ...

    async def abort_reload(self, model: str) -> dict[str, Any]:
        """Stop ``model``'s running rollout; every replica it drained is enabled again."""
        ...

    async def remove_member(self, address: str) -> None: ...

    async def transfer_leader(self, target: str | None = None) -> str | None:
        """Ask the leader to hand over (to ``target`` raft address, or the best follower);
        returns the new leader's node name when known."""
        ...
