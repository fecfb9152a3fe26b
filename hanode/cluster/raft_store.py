"""ClusterStore on pysyncobj (Raft).

pysyncobj runs its own thread. Commands go in with an async callback (a thread-safe queue put,
never a blocking call on the event loop); results and applied states come back to the loop
with ``call_soon_threadsafe``. Settings that matter for safety:

- a password always (the Raft port unpickles what it receives; the password encrypts and
  authenticates every message), except behind ``insecure_dev``;
- ``journalFile`` *and* ``fullDumpFile`` in the data dir (a journal alone loses everything
  after log compaction), ``useFork=False``;
- ``leaderFallbackTimeout`` close to the election timeout, so an isolated leader stops acting
  as leader quickly;
- dynamic membership, one change at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.syncobj import FAIL_REASON

from hanode.cluster.state import ClusterView, Command, CommandError, apply, empty_doc, freeze
from hanode.cluster.store import ConsensusRejected, ConsensusTimeout, StoreStatus

log = structlog.get_logger("hanode.raft")

_FAIL_NAMES = {
    getattr(FAIL_REASON, n): n.lower()
    for n in dir(FAIL_REASON)
    if not n.startswith("_") and isinstance(getattr(FAIL_REASON, n), int)
}


class _StateMachine(SyncObjConsumer):  # type: ignore[misc]
    """The replicated document. Attributes set before ``super().__init__`` are not replicated."""

    def __init__(self, on_applied: Callable[[dict[str, Any], int], None]) -> None:
        self._on_applied = on_applied
        self._applied = 0
        super().__init__()
        self.doc: dict[str, Any] = empty_doc()  # replicated and dumped

    @replicated  # type: ignore[untyped-decorator]
    def execute(self, payload: bytes) -> dict[str, Any]:
        """Runs on every node, in log order, in pysyncobj's thread."""
        self._applied += 1
        try:
            cmd = orjson.loads(payload)
            result = apply(self.doc, cmd)
        except (CommandError, KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            return {"error": str(exc) or type(exc).__name__}
        self._on_applied(self.doc, self._applied)
        return {"result": result}

    def _deserialize(self, data: dict[str, Any]) -> None:
        super()._deserialize(data)
        self._on_applied(self.doc, self._applied)


class _Raft(SyncObj):  # type: ignore[misc]
    pass


class RaftStore:
    def __init__(
        self,
        self_address: str,
        peers: list[str],
        data_dir: Path,
        password: str | None,
        *,
        election_timeout: tuple[float, float] = (0.4, 1.4),
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._listeners: list[Callable[[ClusterView], None]] = []
        self._view = ClusterView()
        self._last_applied_at = time.monotonic()
        self._address = self_address
        data_dir.mkdir(parents=True, exist_ok=True)
        self._machine = _StateMachine(self._applied_in_raft_thread)
        low, high = election_timeout
        conf = SyncObjConf(
            password=password,
            journalFile=str(data_dir / "raft.journal"),
            fullDumpFile=str(data_dir / "raft.dump"),
            useFork=False,
            dynamicMembershipChange=True,
            raftMinTimeout=low,
            raftMaxTimeout=high,
            leaderFallbackTimeout=high,
            appendEntriesPeriod=min(0.1, low / 4),  # pysyncobj wants elections > 3 periods
            # Send each entry at once instead of batching it to the next period: a breaker
            # opened on one router reaches the others in milliseconds, not 100-200 ms. The
            # agents' hysteresis keeps the write rate low enough for this to cost little.
            appendEntriesUseBatch=False,
            connectionRetryTime=1.0,
            connectionTimeout=2.0,
            commandsWaitLeader=True,
            logCompactionMinEntries=2000,
            logCompactionMinTime=60,
        )
        self._raft = _Raft(self_address, peers, conf, consumers=[self._machine])

    # -- from pysyncobj's thread ----------------------------------------------------------------
    def _applied_in_raft_thread(self, doc: dict[str, Any], index: int) -> None:
        view = freeze(doc, index)  # built here, so the loop only swaps a reference
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self._publish, view)

    # -- on the event loop --------------------------------------------------------------------
    def _publish(self, view: ClusterView) -> None:
        if view.index < self._view.index and view.index != 0:
            return
        self._view = view
        self._last_applied_at = time.monotonic()
        for listener in self._listeners:
            listener(view)

    @property
    def view(self) -> ClusterView:
        return self._view

    def subscribe(self, listener: Callable[[ClusterView], None]) -> None:
        self._listeners.append(listener)

    def _bridge(self, fut: asyncio.Future[Any]) -> Callable[[Any, int], None]:
        def callback(result: Any, error: int) -> None:  # pysyncobj thread
            def resolve() -> None:
                if fut.done():
                    return
                if error != FAIL_REASON.SUCCESS:
                    reason = _FAIL_NAMES.get(error, str(error))
                    fut.set_exception(ConsensusRejected(f"consensus refused: {reason}"))
                else:
                    fut.set_result(result)

            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(resolve)

        return callback

    async def _await(self, fut: asyncio.Future[Any], timeout: float, what: str) -> Any:
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise ConsensusTimeout(
                f"{what}: no answer from the cluster within {timeout:g}s (outcome unknown)"
            ) from None

    async def submit(self, command: Command, timeout: float = 3.0) -> Any:
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._machine.execute(orjson.dumps(command), callback=self._bridge(fut))
        outcome = await self._await(fut, timeout, str(command.get("op")))
        if isinstance(outcome, dict) and "error" in outcome:
            raise ConsensusRejected(str(outcome["error"]))
        return outcome.get("result") if isinstance(outcome, dict) else outcome

    def status(self) -> StoreStatus:
        raft = self._raft
        leader = raft._getLeader()
        leader_addr = leader.address if leader is not None else None
        members = [self._address] + [n.address for n in raft.otherNodes]
        connected = tuple(n.address for n in raft.otherNodes if raft.isNodeConnected(n))
        return StoreStatus(
            self_address=self._address,
            leader_address=leader_addr,
            is_leader=bool(raft._isLeader()),
            has_quorum=bool(raft.hasQuorum),
            commit_index=int(raft.raftCommitIndex),
            last_applied_at=self._last_applied_at,
            members=tuple(members),
            connected=connected,
        )

    async def add_member(self, address: str, timeout: float = 10.0) -> None:
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._raft.addNodeToCluster(address, callback=self._bridge(fut))
        await self._await(fut, timeout, f"add member {address}")

    async def remove_member(self, address: str, timeout: float = 10.0) -> None:
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._raft.removeNodeFromCluster(address, callback=self._bridge(fut))
        await self._await(fut, timeout, f"remove member {address}")

    async def transfer_leadership(self, target: str | None, timeout: float = 5.0) -> None:
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._raft.transferLeadership(target, callback=self._bridge(fut))
        await self._await(fut, timeout, "leader transfer")

    def close(self) -> None:
        self._raft.destroy()
