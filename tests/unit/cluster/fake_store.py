"""An in-memory ClusterStore: commands go through the real state machine, at once.

Leadership, term, peer silence and consensus health are set by the test, so the leader loop
and the runtime can be driven round by round without Raft or sleeps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hanode.cluster.document import PROTOCOL, Command, Doc, empty_doc
from hanode.cluster.state import CommandError, IncompatibleCommand, apply
from hanode.cluster.store import ConsensusRejected, StoreStatus
from hanode.cluster.view import ClusterView, freeze


class FakeStore:
    def __init__(self, doc: Doc | None = None, protocol: int = PROTOCOL) -> None:
        self.doc = doc if doc is not None else empty_doc()
        self.protocol = protocol
        self.index = 0
        self.leader = True
        self.quorum = True
        self.term = 1
        self.silence: dict[str, float] | None = {}
        self.problem: str | None = None
        self.submitted: list[Command] = []
        self.digests: dict[str, str] = {}  # checkpoint id -> this node's digest
        self.resyncs: list[str] = []
        self.refused: list[tuple[Command, str]] = []
        self._listeners: list[Callable[[ClusterView], None]] = []
        self._view = freeze(self.doc, 0)

    @property
    def view(self) -> ClusterView:
        return self._view

    def subscribe(self, listener: Callable[[ClusterView], None]) -> None:
        self._listeners.append(listener)

    def publish(self) -> None:
        self.index += 1
        self._view = freeze(self.doc, self.index)
        for listener in self._listeners:
            listener(self._view)

    def apply_now(self, command: Command) -> Any:
        """Apply as if another node had written ``command``."""
        result = apply(self.doc, copy.deepcopy(command), self.protocol)
        self.publish()
        return result

    async def submit(self, command: Command, timeout: float = 3.0) -> Any:
        self.submitted.append(copy.deepcopy(command))
        try:
            result = apply(self.doc, copy.deepcopy(command), self.protocol)
        except (CommandError, IncompatibleCommand) as exc:
            self.refused.append((command, str(exc)))
            raise ConsensusRejected(str(exc)) from None
        self.publish()
        return result

    def status(self) -> StoreStatus:
        return StoreStatus(
            self_address="h:1",
            leader_address="h:1" if self.leader else None,
            is_leader=self.leader,
            has_quorum=self.quorum,
            commit_index=self.index,
            last_applied_at=0.0,
            members=("h:1",),
            connected=(),
            term=self.term,
        )

    def consensus_problem(self, stall_s: float) -> str | None:
        return self.problem

    def checkpoint_digest(self, checkpoint_id: str) -> str | None:
        return self.digests.get(checkpoint_id)

    async def resync(self, reason: str) -> Path:
        self.resyncs.append(reason)
        self.digests.clear()  # a fresh state machine has applied no checkpoint yet
        return Path("/tmp/raft.diverged-test")

    def peer_silence(self) -> dict[str, float] | None:
        return dict(self.silence) if self.leader and self.silence is not None else None

    async def add_member(self, address: str, timeout: float = 10.0) -> None:
        raise NotImplementedError

    async def remove_member(self, address: str, timeout: float = 10.0) -> None:
        raise NotImplementedError

    async def transfer_leadership(self, target: str | None, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def ops(self) -> list[str]:
        return [str(c.get("op")) for c in self.submitted]
