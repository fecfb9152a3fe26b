"""The consensus store interface (as Patroni keeps its DCS behind one class).

The router, the planner and the control API only use :class:`ClusterStore`; pysyncobj lives in
``raft_store``. Another store (etcd, say) would implement the same few members.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hanode.cluster.document import Command
from hanode.cluster.view import ClusterView


class ConsensusTimeout(Exception):
    """No answer in time: the command may or may not apply. Commands are idempotent: repeat."""


class ConsensusRejected(Exception):
    """The store refused the command (not applied): unknown replica, no leader, bad shape."""


@dataclass(frozen=True, slots=True)
class StoreStatus:
    self_address: str
    leader_address: str | None
    is_leader: bool
    has_quorum: bool
    commit_index: int
    last_applied_at: float  # monotonic time of the last applied command (freshness)
    members: tuple[str, ...]  # raft addresses, self included
    connected: tuple[str, ...]  # raft addresses this node is connected to
    term: int = 0  # this node's current Raft term


class ClusterStore(Protocol):
    @property
    def view(self) -> ClusterView:
        """The latest applied state, immutable; read it without locks."""
        ...

    def subscribe(self, listener: Callable[[ClusterView], None]) -> None:
        """Call ``listener`` on the event loop after each applied command."""
        ...

    async def submit(self, command: Command, timeout: float = 3.0) -> Any:
        """Replicate ``command``; returns its result. Raises ConsensusTimeout or
        ConsensusRejected."""
        ...

    def status(self) -> StoreStatus: ...

    def consensus_problem(self, stall_s: float) -> str | None:
        """Why consensus has stopped working on this node (None while it works)."""
        ...

    def peer_silence(self) -> dict[str, float] | None:
        """On the leader: seconds since each peer (raft address) last answered, on the
        leader's own monotonic clock; None elsewhere."""
        ...

    def checkpoint_digest(self, checkpoint_id: str) -> str | None:
        """This node's state digest right after it applied that checkpoint (None: unknown)."""
        ...

    async def resync(self, reason: str) -> Path:
        """Discard this node's diverged state (kept aside; returns where) and rejoin."""
        ...

    @property
    def protocol(self) -> int:
        """The protocol this node's state machine applies."""
        ...

    async def add_member(self, address: str, timeout: float = 10.0) -> None: ...

    async def remove_member(self, address: str, timeout: float = 10.0) -> None: ...

    async def transfer_leadership(self, target: str | None, timeout: float = 5.0) -> None: ...

    def close(self) -> None: ...
