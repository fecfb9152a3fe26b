"""ClusterStore on pysyncobj (Raft).

pysyncobj runs its own thread. Commands go in with an async callback (a thread-safe queue put,
never a blocking call on the event loop); results and applied states come back to the loop
with ``call_soon_threadsafe``. Settings that matter for safety:

- a password always (the Raft port unpickles what it receives; the password encrypts and
  authenticates every message), except behind ``insecure_dev``;
- the hardened transport (``transport.py``): bounded frames, a handshake deadline, a listener
  that survives EMFILE, bound to the host of ``raft_listen``;
- ``journalFile`` *and* ``fullDumpFile`` in the data dir (a journal alone loses everything
  after log compaction), ``useFork=False``;
- ``leaderFallbackTimeout`` close to the election timeout, so an isolated leader stops acting
  as leader quickly;
- dynamic membership, one change at a time.

The store also watches pysyncobj itself: its thread ticking (a dead or stalled consensus thread
must stop the node, not leave it serving an empty view), and, on the leader, when each peer last
answered, on the leader's own monotonic clock (the node leases).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import structlog
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.syncobj import FAIL_REASON

from hanode.cluster.document import PROTOCOL, Command, digest, empty_doc, upgrade_doc
from hanode.cluster.state import CommandError, IncompatibleCommand, apply
from hanode.cluster.store import ConsensusRejected, ConsensusTimeout, StoreStatus
from hanode.cluster.transport import HardenedTransport
from hanode.cluster.view import ClusterView, freeze

log = structlog.get_logger("hanode.raft")

_FAIL_NAMES = {
    getattr(FAIL_REASON, n): n.lower()
    for n in dir(FAIL_REASON)
    if not n.startswith("_") and isinstance(getattr(FAIL_REASON, n), int)
}


class _StateMachine(SyncObjConsumer):  # type: ignore[misc]
    """The replicated document. Attributes set before ``super().__init__`` are not replicated.

    A command this code cannot apply (a newer protocol) halts the machine: it and every later
    command are kept, unapplied, in ``backlog`` (which the dump keeps too), so the state never
    diverges; a node restarted with newer code applies the backlog and goes on.
    """

    def __init__(
        self, on_applied: Callable[[dict[str, Any], int, str | None], None], protocol: int
    ) -> None:
        self._on_applied = on_applied
        self._applied = 0
        self._protocol = protocol
        # checkpoint id -> digest of this node's state right after applying it (local only)
        self.checkpoints: dict[str, str] = {}
        super().__init__()
        self.doc: dict[str, Any] = empty_doc()  # replicated and dumped
        self.halted: str | None = None
        self.backlog: list[bytes] = []

    @replicated  # type: ignore[untyped-decorator]
    def execute(self, payload: bytes) -> dict[str, Any]:
        """Runs on every node, in log order, in pysyncobj's thread."""
        self._applied += 1
        if self.halted is not None:
            self.backlog.append(payload)
            return {"error": f"node halted: {self.halted}"}
        outcome = self._apply(payload)
        self._on_applied(self.doc, self._applied, self.halted)
        return outcome

    def _apply(self, payload: bytes) -> dict[str, Any]:
        try:
            cmd = orjson.loads(payload)
            if not isinstance(cmd, dict):
                raise CommandError("a command is a JSON object")
            result = apply(self.doc, cmd, self._protocol)
            if cmd.get("op") == "checkpoint" and result:
                self._remember_checkpoint(str(cmd["id"]))
        except IncompatibleCommand as exc:
            self.halted = str(exc)
            self.backlog.append(payload)
            log.error("raft_halted", reason=self.halted)
            return {"error": f"node halted: {self.halted}", "halted": True}
        except (CommandError, KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            return {"error": str(exc) or type(exc).__name__}
        return {"result": result}

    def _remember_checkpoint(self, cid: str) -> None:
        self.checkpoints[cid] = digest(self.doc)
        while len(self.checkpoints) > 8:
            del self.checkpoints[next(iter(self.checkpoints))]

    def _deserialize(self, data: dict[str, Any]) -> None:
        super()._deserialize(data)
        self.checkpoints = {}  # a state from elsewhere: its digests here are not ours to judge
        upgrade_doc(self.doc)
        high = int(self.doc.get("protocol_high", 1))
        if high > self._protocol and self.halted is None:
            # A snapshot from newer nodes (a joining or restarted old node gets one instead of
            # the log): as unreadable to this code as the commands it was built from.
            self.halted = (
                f"the cluster's state needs protocol {high}; this node speaks protocol "
                f"{self._protocol}"
            )
            log.error("raft_halted", reason=self.halted)
            self._on_applied(self.doc, self._applied, self.halted)
            return
        if self.halted is not None:  # maybe this code can apply what an older one could not
            backlog, self.backlog, self.halted = self.backlog, [], None
            for i, payload in enumerate(backlog):
                if self._apply(payload).get("halted"):
                    self.backlog.extend(backlog[i + 1 :])
                    break
        self._on_applied(self.doc, self._applied, self.halted)


class _Raft(SyncObj):  # type: ignore[misc]
    """pysyncobj with a heartbeat: each tick of its thread is stamped, so a stalled or dead
    consensus thread can be told from a quiet cluster.

    The stamp lives in a list made before ``SyncObj.__init__``: pysyncobj writes every
    attribute set after it into the full dump and restores it from there, and a stamp that
    came back from a dump (written minutes ago) read as a stalled thread, so a restarted node
    exited ~2 s after starting ("has not ticked for 31.8s"; found by the 7-node bench). The
    property also shadows a ``last_tick`` that an older dump still holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._hanode_tick = [time.monotonic()]  # before super().__init__: never replicated
        super().__init__(*args, **kwargs)

    @property
    def last_tick(self) -> float:
        return self._hanode_tick[0]

    def stamp(self) -> None:
        self._hanode_tick[0] = time.monotonic()

    def _onTick(self, timeToWait: float = 0.0) -> None:
        super()._onTick(timeToWait)
        self._hanode_tick[0] = time.monotonic()


def _protocol() -> int:
    """This node's protocol; HANODE_PROTOCOL lowers it to rehearse a mixed-version rollout."""
    text = os.environ.get("HANODE_PROTOCOL", "")
    if text.isdigit() and 1 <= int(text) <= PROTOCOL:
        return int(text)
    return PROTOCOL


def _env_int(name: str, default: int) -> int:
    """Test drills force log compaction early (HANODE_RAFT_COMPACTION_*): 1 or more."""
    text = os.environ.get(name, "")
    return int(text) if text.isdigit() and int(text) >= 1 else default


class RaftStore:
    def __init__(
        self,
        self_address: str,
        peers: list[str],
        data_dir: Path,
        password: str | None,
        *,
        election_timeout: tuple[float, float] = (0.4, 1.4),
        bind_address: str | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._listeners: list[Callable[[ClusterView], None]] = []
        self._view = ClusterView()
        # The newest view built in pysyncobj's thread and not yet taken by the event loop:
        # when commands apply faster than the loop runs, it takes only the latest (each view
        # costs the pool a full rebuild of weights and routes).
        self._pending: ClusterView | None = None
        self._pending_lock = threading.Lock()
        self._last_applied_at = time.monotonic()
        self._address = self_address
        self._data_dir = data_dir
        self.protocol = _protocol()
        self._generation = 0
        self._catching_up = False  # after a resync: views wait until the state is whole
        data_dir.mkdir(parents=True, exist_ok=True)
        low, high = election_timeout
        self._conf = SyncObjConf(
            password=password,
            # The configured host of raft_listen (pysyncobj would bind 0.0.0.0).
            bindAddress=bind_address or self_address,
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
            logCompactionMinEntries=_env_int("HANODE_RAFT_COMPACTION_ENTRIES", 2000),
            logCompactionMinTime=_env_int("HANODE_RAFT_COMPACTION_S", 60),
        )
        self._machine, self._raft = self._build(peers)

    def _build(self, peers: list[str]) -> tuple[_StateMachine, _Raft]:
        generation = self._generation

        def applied(doc: dict[str, Any], index: int, halted: str | None) -> None:
            if generation == self._generation:  # a replaced machine's late applies are dropped
                self._applied_in_raft_thread(doc, index, halted)

        machine = _StateMachine(applied, self.protocol)
        raft = _Raft(
            self._address,
            peers,
            self._conf,
            consumers=[machine],
            transportClass=HardenedTransport,  # bounded frames, handshake deadline, EMFILE
        )
        raft.stamp()
        return machine, raft

    def checkpoint_digest(self, checkpoint_id: str) -> str | None:
        """The digest of this node's state right after it applied checkpoint ``id``."""
        return self._machine.checkpoints.get(checkpoint_id)

    async def resync(self, reason: str) -> Path:
        """Throw this node's replicated state away and take the cluster's again.

        For a state that diverged from the majority's: the old journal and dump are kept aside
        (``raft.diverged-<time>``) for a post-mortem, a fresh state machine rejoins with the
        current members, and the router keeps its last view until the new state is whole."""
        members = [m for m in self.status().members if m != self._address]
        log.error("raft_resync", reason=reason, members=members)
        old = self._raft
        self._generation += 1
        await self._loop.run_in_executor(None, old.destroy_synchronous)
        aside = self._data_dir.with_name(f"{self._data_dir.name}.diverged-{int(time.time())}")
        self._data_dir.rename(aside)
        self._data_dir.mkdir(parents=True)
        self._catching_up = True
        self._machine, self._raft = self._build(members)
        return aside

    # -- from pysyncobj's thread ----------------------------------------------------------------
    def _applied_in_raft_thread(self, doc: dict[str, Any], index: int, halted: str | None) -> None:
        view = freeze(doc, index, halted)  # built here, so the loop only swaps a reference
        with self._pending_lock:
            first = self._pending is None
            self._pending = view
        if first:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                self._loop.call_soon_threadsafe(self._publish_pending)

    def _publish_pending(self) -> None:
        with self._pending_lock:
            view, self._pending = self._pending, None
        if view is not None:
            self._publish(view)

    # -- on the event loop --------------------------------------------------------------------
    def _publish(self, view: ClusterView) -> None:
        if self._catching_up:
            if not self._raft.isReady():
                return  # a state still being rebuilt would empty the routers' pools
            self._catching_up = False
        elif view.index < self._view.index and view.index != 0:
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

    def consensus_problem(self, stall_s: float) -> str | None:
        """Why consensus cannot be trusted to work any more (None: it is ticking)."""
        thread = getattr(self._raft, "_SyncObj__thread", None)
        if isinstance(thread, threading.Thread) and not thread.is_alive():
            return "the consensus thread has died"
        age = time.monotonic() - self._raft.last_tick
        if age > stall_s:
            return f"the consensus thread has not ticked for {age:.1f}s"
        return None

    def peer_silence(self) -> dict[str, float] | None:
        """Seconds since each peer last answered this node, on this node's monotonic clock;
        None unless this node leads (only a leader hears from every peer). pysyncobj keeps
        these times privately; a version that renames them yields None, and leases pause."""
        raft = self._raft
        if not raft._isLeader():
            return None
        times = getattr(raft, "_SyncObj__lastResponseTime", None)
        if not isinstance(times, dict):
            return None
        for _ in range(3):  # the consensus thread may change it while we copy
            try:
                copied = dict(times)
                break
            except RuntimeError:
                continue
        else:
            return None
        now = time.monotonic()
        return {getattr(node, "address", str(node)): now - t for node, t in copied.items()}

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
            term=int(raft.raftCurrentTerm),
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
