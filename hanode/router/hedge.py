"""The second try of a hedged request (policies/hedge.py says when): an upstream exchange of
its own until one of the two tries answers.

The relay's own try is the first. :class:`HedgeTry` sends the same request to another replica
and waits. If its head comes first (a 2xx), it wins: the relay cancels its own try (the
connection is closed, so the engine frees the slot) and takes the hedge over as its current
try; from then on the hedge only forwards the upstream callbacks to the relay. If the relay's
head comes first, or the relay ends, the hedge is cancelled. If the relay's own try fails
while the hedge waits, the relay takes the hedge over as its current try instead of retrying.
A hedge that fails on its own (an error head, a lost connection) ends quietly: the relay's try
goes on; a lost connection is still evidence for its replica's breaker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from hanode.policies.failure import FailureClass
from hanode.router.registry import Replica
from hanode.router.upstream import TryError, UpstreamHandle

if TYPE_CHECKING:
    from hanode.router.core import RouterCore


class HedgeOwner(Protocol):
    """What the hedge needs of its relay."""

    def hedge_won(
        self, hedge: HedgeTry, status: int, headers: dict[bytes, bytes], chunked: bool
    ) -> None: ...
    def hedge_gone(self, hedge: HedgeTry) -> None: ...
    def on_head(self, status: int, headers: dict[bytes, bytes], chunked: bool) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def on_complete(self) -> None: ...
    def on_error(self, message: str, kind: TryError) -> None: ...


class HedgeTry:
    """The hedge's exchange: waiting, then (once adopted by the relay) a forwarder."""

    __slots__ = ("_core", "_owner", "adopted", "handle", "name", "probe", "t0", "target")

    def __init__(
        self, core: RouterCore, owner: HedgeOwner, target: Replica, probe: bool, t0: float
    ) -> None:
        self._core = core
        self._owner = owner
        self.target = target
        self.name = target.name
        self.probe = probe  # it holds its breaker's half-open probe slot
        self.t0 = t0
        self.handle: UpstreamHandle | None = None
        self.adopted = False  # the relay's current try now: callbacks go to the relay
        core.track(target, self)

    # -- ending it -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """The other try answered first, or the request ended: close the connection (the
        engine frees its slot), no verdict on the replica."""
        if self.handle is not None:
            self.handle.abandon()
            self.handle = None
        self._untrack()
        if self.probe:
            self.probe = False
            self.target.breaker.release_probe()

    def hand_over(self) -> None:
        """The relay takes this try as its own: it tracks it from now on."""
        self.adopted = True
        self._untrack()

    def _untrack(self) -> None:
        if self in self.target.tries:
            self._core.untrack(self.target, self)

    # -- Try (registry) ------------------------------------------------------------------------
    def replica_dead(self, why: str) -> None:
        if not self.adopted:
            self.cancel()
            self._owner.hedge_gone(self)

    # -- Exchange ------------------------------------------------------------------------------
    def on_head(self, status: int, headers: dict[bytes, bytes], chunked: bool) -> None:
        if self.adopted:
            self._owner.on_head(status, headers, chunked)
        elif 200 <= status < 300:
            self._owner.hedge_won(self, status, headers, chunked)
        else:
            self.cancel()  # the relay's own try goes on; its answer is the one that counts
            self._owner.hedge_gone(self)

    def on_body(self, data: bytes) -> None:
        if self.adopted:
            self._owner.on_body(data)

    def flush(self) -> None:
        if self.adopted:
            self._owner.flush()

    def on_complete(self) -> None:
        if self.adopted:
            self._owner.on_complete()

    def on_error(self, message: str, kind: TryError) -> None:
        if self.adopted:
            self._owner.on_error(message, kind)
            return
        self.handle = None
        self._untrack()
        if kind is not TryError.LOCAL:
            now = self._core.loop.time()
            self.probe = False
            transitions = self.target.breaker.on_failure(
                FailureClass.CONNECTION,
                now,
                refused=kind is TryError.REFUSED,
                unreachable=kind.unreachable,
            )
            self._core.breaker_changed(self.name, transitions)
        elif self.probe:
            self.probe = False
            self.target.breaker.release_probe()
        self._owner.hedge_gone(self)
