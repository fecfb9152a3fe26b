"""Cluster scale, in process: the state machine, the snapshots and the planner at 8, 64 and 512
replicas (``python -m bench.scale [--quick]``; part of ``make bench``).

No network and no consensus: the document of each fleet size (:mod:`bench.scale_fleet`) is
built through :func:`hanode.cluster.state.apply`, and every stage a node runs for one applied
command is timed on it, one command at a time (median of many):

* ``apply`` of each common command kind (observation heartbeat and changes, a breaker open, a
  drain, the planner's weights and role change), in pysyncobj's thread on every node;
* ``freeze`` of the document into the :class:`~hanode.cluster.view.ClusterView` the event loop
  gets after each command (same thread), and the :class:`~hanode.cluster.pool.ClusterPool`
  snapshot the router builds from it (on the event loop);
* the whole path of one applied heartbeat (JSON decode, apply, freeze, pool snapshot);
* the full dump pysyncobj writes at log compaction and sends to a joining or lagging node (the
  state machine's own ``_serialize``, gzip + pysyncobj's pickle, as its serializer does), and
  loading it back;
* one planner round (:meth:`hanode.cluster.leader.LeaderLoop.decide` on the view);
* memory (tracemalloc): the document, a view, a pool snapshot, and the peak while building.

Timings are wall-clock medians on whatever machine runs it (a shared 2-core VM is noisy); the
ratios between sizes are the figures to read (:mod:`bench.scale_report`).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import io
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pysyncobj import pickle as raft_pickle

from bench.scale_fleet import (
    KINDS,
    PLANNER,
    THRESHOLDS,
    Fleet,
    build_doc,
    default_fleet,
    sample_commands,
)
from hanode.cluster.document import PROTOCOL, Doc, digest
from hanode.cluster.leader import LeaderLoop, LeaderSettings
from hanode.cluster.planner import ModelPolicy, Redundancy
from hanode.cluster.pool import ClusterPool
from hanode.cluster.raft_store import _StateMachine
from hanode.cluster.state import apply
from hanode.cluster.view import ClusterView, freeze
from hanode.policies.slow_start import SlowStart
from hanode.policies.weights import WeightInput, compute_weights
from hanode.pool.snapshot import PoolSnapshot

__all__ = ["QUICK", "ScaleResult", "ScaleSettings", "SizePoint", "run"]


@dataclass(frozen=True, slots=True)
class ScaleSettings:
    sizes: tuple[int, ...] = (8, 64, 512)
    apply_reps: int = 300  # commands of each kind applied, one at a time
    freeze_reps: int = 40
    path_reps: int = 60
    planner_reps: int = 20
    dump_reps: int = 5


QUICK = ScaleSettings(apply_reps=40, freeze_reps=8, path_reps=10, planner_reps=4, dump_reps=2)


@dataclass(slots=True)
class SizePoint:
    replicas: int
    hosts: int
    models: int
    apply_us: dict[str, float] = field(default_factory=dict)  # kind -> median
    rollback_copy_us: float = 0.0  # apply's orjson copy of the whole document, alone
    freeze_us: float = 0.0
    digest_us: float = 0.0  # the view's state digest (part of freeze)
    pool_us: float = 0.0
    pool_weights_us: float = 0.0  # of which: the local weights (policies.weights)
    pool_build_us: float = 0.0  # of which: PoolSnapshot.build (routes per model)
    path_us: float = 0.0  # decode + apply + freeze + pool snapshot, one heartbeat
    doc_json_bytes: int = 0
    dump_bytes: int = 0  # gzip + pickle, what pysyncobj writes and transmits
    dump_raw_bytes: int = 0  # the pickle before gzip
    dump_ms: float = 0.0
    load_ms: float = 0.0
    planner_ms: float = 0.0
    planner_commands: int = 0
    doc_kib: float = 0.0  # tracemalloc: the document alone
    view_kib: float = 0.0  # one ClusterView
    pool_kib: float = 0.0  # one PoolSnapshot (with the pool's own state)
    peak_kib: float = 0.0  # peak while building the document, its view and pool


@dataclass(slots=True)
class ScaleResult:
    settings: ScaleSettings
    points: list[SizePoint] = field(default_factory=list)
    elapsed_s: float = 0.0
    error: str = ""


def _median_us(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1e3 if samples_ns else float("nan")


def _timed(fn: Callable[[], Any], reps: int) -> float:
    """Median microseconds of ``fn()`` over ``reps`` calls."""
    out = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return _median_us(out)


class _Store:
    """What :meth:`LeaderLoop.decide` reads of a store: the view, the protocol, peer silence."""

    def __init__(self, view: ClusterView, hosts: list[str]) -> None:
        self.view = view
        self.protocol = PROTOCOL
        self._silence = dict.fromkeys(hosts, 0.1)

    def peer_silence(self) -> dict[str, float]:
        return self._silence


def _policies(fleet: Fleet) -> dict[str, ModelPolicy]:
    actives = sum(1 for i in range(fleet.replicas) if fleet.role(i) == "active")
    per_model = max(1, actives // fleet.models)
    return {
        f"model-{m}": ModelPolicy(f"model-{m}", per_model, Redundancy.N_PLUS_1)
        for m in range(fleet.models)
    }


def _apply_kind(doc: Doc, fleet: Fleet, kind: str, reps: int) -> float:
    """Median apply time of ``reps`` commands of ``kind``, applied in order to ``doc``."""
    commands = sample_commands(fleet, kind, reps)
    out = []
    for cmd in commands:
        t0 = time.perf_counter_ns()
        apply(doc, cmd)
        out.append(time.perf_counter_ns() - t0)
    return _median_us(out)


def serialized(doc: Doc) -> Any:
    """What hanode's state machine hands pysyncobj for its full dump (its own ``_serialize``)."""
    machine = _StateMachine(lambda *_: None, PROTOCOL)
    machine.doc = doc
    return machine._serialize()


def dump(doc: Doc) -> bytes:
    """The state machine's part of pysyncobj's full dump, written as its serializer writes it."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as g:
        raft_pickle.dump(serialized(doc), g)
    return buf.getvalue()


def load(data: bytes) -> Any:
    with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as g:
        return raft_pickle.load(g)


def measure_size(fleet: Fleet, s: ScaleSettings) -> SizePoint:
    p = SizePoint(fleet.replicas, fleet.hosts, fleet.models)
    built = orjson.dumps(build_doc(fleet))
    for kind in KINDS:  # each kind on the same steady fleet, not one left mid-drain
        p.apply_us[kind] = _apply_kind(orjson.loads(built), fleet, kind, s.apply_reps)
    doc = orjson.loads(built)
    p.rollback_copy_us = _timed(lambda: orjson.dumps(doc), s.freeze_reps)
    p.digest_us = _timed(lambda: digest(doc), s.freeze_reps)
    p.freeze_us = _timed(lambda: freeze(doc, 1), s.freeze_reps)
    view = freeze(doc, 1)
    pool = ClusterPool(THRESHOLDS, {}, SlowStart(0.0))
    p.pool_us = _timed(lambda: pool.update(view, 0.0), s.freeze_reps)
    inputs = {
        n: WeightInput(r.spec.model, r.role, r.admin, r.observation)
        for n, r in view.replicas.items()
    }
    p.pool_weights_us = _timed(lambda: compute_weights(inputs, THRESHOLDS), s.freeze_reps)
    states = pool.snapshot.replicas
    p.pool_build_us = _timed(lambda: PoolSnapshot.build(1, states), s.freeze_reps)

    heartbeats = [orjson.dumps(c) for c in sample_commands(fleet, KINDS[0], s.path_reps, 10_000)]
    path = []
    for index, payload in enumerate(heartbeats, start=2):
        t0 = time.perf_counter_ns()
        apply(doc, orjson.loads(payload))
        pool.update(freeze(doc, index), 0.0)
        path.append(time.perf_counter_ns() - t0)
    p.path_us = _median_us(path)

    p.doc_json_bytes = len(orjson.dumps(doc))
    data = dump(doc)
    p.dump_bytes = len(data)
    p.dump_raw_bytes = len(raft_pickle.dumps(serialized(doc)))
    p.dump_ms = _timed(lambda: dump(doc), s.dump_reps) / 1e3
    p.load_ms = _timed(lambda: load(data), s.dump_reps) / 1e3

    hosts = [fleet.host(h) for h in range(fleet.hosts)]
    policies = _policies(fleet)
    loop = LeaderLoop(
        fleet.host(0),
        _Store(view, hosts),  # type: ignore[arg-type]
        _no_write,
        policies,
        PLANNER,
        LeaderSettings(interval_s=1.0, lease_s=6.0, checkpoint_s=3600.0),
        clock=lambda: 1000.0,
    )
    loop.term = 7
    p.planner_commands = len(loop.decide(view, fenced=True))
    p.planner_ms = _timed(lambda: loop.decide(view, fenced=True), s.planner_reps) / 1e3
    _memory(fleet, p)
    return p


async def _no_write(_: Any) -> None:
    return None


def _memory(fleet: Fleet, p: SizePoint) -> None:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        doc = build_doc(fleet)
        after_doc = tracemalloc.get_traced_memory()[0]
        view = freeze(doc, 1)
        after_view = tracemalloc.get_traced_memory()[0]
        pool = ClusterPool(THRESHOLDS, {}, SlowStart(0.0))
        pool.update(view, 0.0)
        after_pool = tracemalloc.get_traced_memory()[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    p.doc_kib = (after_doc - base) / 1024
    p.view_kib = (after_view - after_doc) / 1024
    p.pool_kib = (after_pool - after_view) / 1024
    p.peak_kib = (peak - base) / 1024
    del doc, view, pool


def run(
    settings: ScaleSettings | None = None, say: Callable[[str], None] | None = None
) -> ScaleResult:
    s = settings or ScaleSettings()
    result = ScaleResult(s)
    t0 = time.monotonic()
    try:
        for n in s.sizes:
            point = measure_size(default_fleet(n), s)
            result.points.append(point)
            if say is not None:
                say(
                    f"{n} replicas ({point.hosts} hosts, {point.models} models): heartbeat "
                    f"applied {point.apply_us[KINDS[0]]:.1f} us, freeze {point.freeze_us:.0f} us, "
                    f"pool {point.pool_us:.0f} us, whole path {point.path_us:.0f} us; dump "
                    f"{point.dump_bytes / 1024:.0f} KiB in {point.dump_ms:.1f} ms; planner "
                    f"{point.planner_ms:.2f} ms"
                )
    except Exception as exc:  # a bug in the measurement must not lose the rest of make bench
        result.error = f"{type(exc).__name__}: {exc}"
    result.elapsed_s = time.monotonic() - t0
    return result


def _say(msg: str) -> None:
    print(f"bench: scale: {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    from bench.scale_report import render, summary

    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    a = p.parse_args(argv)
    result = run(QUICK if a.quick else ScaleSettings(), _say)
    print()
    print(render(result))
    print()
    print(summary(result))
    return 1 if result.error else 0


if __name__ == "__main__":
    sys.exit(main())
