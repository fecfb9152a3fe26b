"""Consensus write rate: Raft commits per second (and per replica) that the agents produce,
with the cluster idle and under light traffic, broken down by command.

The total is the leader's commit-index delta (ops ``/status`` ``freshness.commit_index``). The
breakdown reads the window's commands back from the leader's Raft journal with pysyncobj's own
reader (:class:`pysyncobj.journal.FileJournal`, on a copy: it maps and may resize the file it
opens), so the bench knows nothing of the file format. pysyncobj compacts its log at least
every 60 s, so a tap copies the journal a few times a second and keeps every entry it saw.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pysyncobj import pickle as raft_pickle
from pysyncobj.journal import FileJournal
from pysyncobj.syncobj import _COMMAND_TYPE

from bench.client import paced_load
from bench.cluster.harness import BODY, Cluster
from hanode.cluster.document import OBS_FIELDS

# What an observation carries besides the metric fields (see hanode.cluster.state._observe).
OBSERVATION_KEYS = ("level", *OBS_FIELDS, "gpu_removed", "reason")


@dataclass(slots=True)
class WriteWindow:
    label: str
    duration_s: float
    commits: int
    replicas: int
    requests: int = 0
    request_errors: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    observe_reasons: Counter[str] = field(default_factory=Counter)
    by_node: Counter[str] = field(default_factory=Counter)
    parsed: int = 0  # journal entries found for the window

    @property
    def per_s(self) -> float:
        return self.commits / self.duration_s if self.duration_s else float("nan")

    @property
    def per_replica_s(self) -> float:
        return self.per_s / self.replicas if self.replicas else float("nan")


def read_journal(path: Path, scratch: Path) -> list[tuple[int, bytes]]:
    """(index, entry) of every entry in a pysyncobj journal, read by pysyncobj from a copy."""
    shutil.copyfile(path, scratch)
    journal = FileJournal(str(scratch))
    try:
        return [(int(idx), bytes(entry)) for entry, idx, _term in journal]
    finally:
        journal._destroy()  # the Journal interface's close (flush, unmap)


def command_of(entry: bytes) -> dict[str, Any] | None:
    """The hanode command of a journal entry, or None for Raft's own (no-op, membership).

    A regular entry is pysyncobj's call record ``(method id, args[, kwargs])``; hanode's one
    replicated method takes the command as JSON bytes.
    """
    if entry[:1] != bytes([_COMMAND_TYPE.REGULAR]):
        return None
    try:
        call = raft_pickle.loads(entry[1:])
    except Exception:  # a torn copy of an entry being rewritten by a compaction
        return None
    args = call[1] if isinstance(call, tuple) and len(call) >= 2 else ()
    for arg in args:
        if isinstance(arg, bytes):
            with contextlib.suppress(ValueError):
                doc = json.loads(arg)
                if isinstance(doc, dict) and "op" in doc:
                    return doc
    return None


class JournalTap:
    """Reads a journal every ``interval_s`` and keeps every entry seen (compaction drops them)."""

    def __init__(self, path: Path, scratch: Path, interval_s: float = 0.25) -> None:
        self.path = path
        self.scratch = scratch
        self.interval_s = interval_s
        self.entries: dict[int, bytes] = {}
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> None:
        try:
            for idx, entry in read_journal(self.path, self.scratch):
                self.entries.setdefault(idx, entry)
        except Exception as exc:  # a copy taken mid-compaction: the next read will do
            self.errors[type(exc).__name__] += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._read()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> JournalTap:
        self._read()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self._read()

    def sorted(self) -> list[tuple[int, bytes]]:
        return sorted(self.entries.items())


def classify(window: WriteWindow, entries: list[tuple[int, bytes]], lo: int, hi: int) -> None:
    """Fill the window's breakdown from the journal entries with index in (lo, hi]."""
    last_obs: dict[str, dict[str, Any]] = {}
    for idx, entry in entries:
        cmd = command_of(entry)
        if idx <= lo:
            if cmd is not None and cmd.get("op") == "observe":
                last_obs[str(cmd.get("replica"))] = dict(cmd.get("obs", {}))
            continue
        if idx > hi:
            break
        window.parsed += 1
        if cmd is None:
            window.ops["(raft internal: no-op / membership)"] += 1
            continue
        op = str(cmd.get("op"))
        if op in ("add_event", "open_breaker"):
            label = f"add_event ({cmd.get('kind')})" if op == "add_event" else op
            window.ops[label] += 1
            node = cmd.get("node") or cmd.get("fields", {}).get("node")
            window.by_node[str(node or "?")] += 1
            continue
        window.ops[op] += 1
        if op != "observe":
            continue
        replica = str(cmd.get("replica"))
        window.by_node[replica.split("r")[0] or "?"] += 1
        obs = dict(cmd.get("obs", {}))
        prev = last_obs.get(replica)
        last_obs[replica] = obs
        if prev is None:
            window.observe_reasons["first in journal"] += 1
            continue
        changed = [f for f in OBSERVATION_KEYS if prev.get(f) != obs.get(f)]
        if not changed:
            window.observe_reasons["nothing changed (heartbeat)"] += 1
        for f in changed:
            window.observe_reasons[f"{f} changed"] += 1


def write_window(c: Cluster, label: str, duration_s: float, rps: float) -> WriteWindow:
    """Count the leader's commits over ``duration_s``, with ``rps`` through every router."""
    leader = c.node(c.wait_leader(c.nodes, 10.0))
    stop = threading.Event()
    counts: Counter[str] = Counter()
    runner: threading.Thread | None = None
    if rps > 0:
        ports = [n.router_port for n in c.nodes]
        runner = threading.Thread(
            target=paced_load,
            args=(ports, "/v1/completions", BODY, rps, stop, counts),
            daemon=True,
        )
        runner.start()
        time.sleep(2.0)  # let the traffic's effect on observations start before counting
    with JournalTap(leader.journal, c.tmp / "journal-copy") as tap:
        ci0, t0 = leader.commit_index(), time.monotonic()
        time.sleep(duration_s)
        ci1, t1 = leader.commit_index(), time.monotonic()
    stop.set()
    if runner is not None:
        runner.join(20.0)
    window = WriteWindow(label, t1 - t0, ci1 - ci0, len(c.replicas))
    window.requests = sum(counts.values())
    window.request_errors = window.requests - counts["ok"]
    classify(window, tap.sorted(), ci0, ci1)
    return window
