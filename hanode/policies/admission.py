"""How many requests of a model this router may have in service, and the queues of the rest (pure).

Capacity. Each serving replica (in the model's route: weight above 0) offers
``slots = floor(limit x weight / heaviest weight)`` concurrent requests (at least 1), where
``limit`` is its concurrency limit (``[[models]] max_concurrency``, else ``[router]
max_concurrency``), lowered to what the engine runs now when the engine says it cannot take
more: it queues requests (``queue_depth`` > 0: its own ``max_num_seqs`` is reached) or its KV
cache is full (``kv_usage`` >= ``KV_FULL``). Weights count relative to the model's heaviest
replica, so slow start and the planner's demotions shrink a replica's part while load the
router itself caused (which lowers every loaded replica's weight alike) does not shrink the
whole model's capacity and feed back on itself. The model's capacity is the sum.

Several routers. Every router sees the same replicated pool, so each takes
``share = ceil(capacity / live routers)`` (at least 1 while capacity > 0): together they admit
at most ``capacity + routers - 1``, and no router needs to ask another before admitting.

Queues. Requests beyond the share wait in one bounded queue per class, served strictly by
priority and, within a class, round robin over API keys, so one busy key cannot starve the
others. :class:`ClassQueues` holds them; times are passed in, nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

KV_FULL = 0.99


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """What capacity is computed from, for one replica in the model's route (``weight``
    relative to the model's heaviest replica, 0..1)."""

    weight: float
    limit: int
    kv_usage: float | None = None
    queue_depth: float | None = None
    running: float | None = None


def engine_full(load: ReplicaLoad) -> bool:
    """The engine says it takes no more at once: it queues, or its KV cache is full."""
    queued = load.queue_depth is not None and load.queue_depth > 0
    kv_full = load.kv_usage is not None and load.kv_usage >= KV_FULL
    return queued or kv_full


def replica_slots(load: ReplicaLoad) -> int:
    """Concurrent requests one replica takes (see the module docstring)."""
    if load.weight <= 0.0 or load.limit <= 0:
        return 0
    limit = load.limit
    if engine_full(load) and load.running is not None:
        limit = min(limit, max(1, int(load.running)))
    return max(1, math.floor(limit * min(load.weight, 1.0)))


def relative_loads(
    items: Iterable[tuple[float, int, float | None, float | None, float | None]],
) -> list[ReplicaLoad]:
    """(weight, limit, kv, queue, running) per replica -> loads with relative weights."""
    rows = list(items)
    heaviest = max((w for w, *_ in rows), default=0.0)
    if heaviest <= 0.0:
        return []
    return [ReplicaLoad(w / heaviest, lim, kv, q, r) for w, lim, kv, q, r in rows]


def model_capacity(loads: Iterable[ReplicaLoad]) -> int:
    return sum(replica_slots(load) for load in loads)


def router_share(capacity: int, routers: int) -> int:
    """This router's part of ``capacity`` when ``routers`` routers share it."""
    if capacity <= 0:
        return 0
    return max(1, math.ceil(capacity / max(1, routers)))


def class_limit(share: int, capacity_share: float) -> int:
    """Requests of one class in service at most: its part of the router's share (at least
    one while the share is above 0)."""
    if share <= 0:
        return 0
    return max(1, math.floor(share * min(1.0, max(0.0, capacity_share))))


def pressure(in_service: int, queued: int, share: int, memory_share: float = 0.0) -> float:
    """The model's pressure: demand (in service + queued here) over this router's share, plus
    the share of its serving replicas under GPU-memory pressure. 1.0 is "exactly full"; with
    no capacity at all any demand is infinite pressure, none is 0."""
    demand = in_service + queued
    if share <= 0:
        return math.inf if demand > 0 else memory_share
    return demand / share + memory_share


T = TypeVar("T")


@dataclass(slots=True)
class Waiting(Generic[T]):
    """One queued request: its payload, class, fairness key and when it gives up."""

    item: T
    request_class: str
    key: str
    deadline: float
    queued_at: float
    gone: bool = False  # removed (served, timed out, client left): skipped lazily


class ClassQueues(Generic[T]):
    """Bounded per-class queues: strict priority across classes, round robin over keys within
    one. Every operation is O(1) amortized except :meth:`expired` (O(expired + keys))."""

    def __init__(self, priorities: dict[str, int], bounds: dict[str, int]) -> None:
        self._order = sorted(priorities, key=lambda c: (priorities[c], c))
        self._bounds = bounds
        # class -> key -> FIFO of that key's waiting requests (keys rotate: OrderedDict order)
        self._queues: dict[str, OrderedDict[str, deque[Waiting[T]]]] = {
            c: OrderedDict() for c in self._order
        }
        self._lengths: dict[str, int] = dict.fromkeys(self._order, 0)
        self._total = 0
        self.max_seen: dict[str, int] = dict.fromkeys(self._order, 0)

    def __len__(self) -> int:
        return self._total

    def length(self, request_class: str) -> int:
        return self._lengths.get(request_class, 0)

    def push(
        self, item: T, request_class: str, key: str, now: float, timeout_s: float
    ) -> Waiting[T] | None:
        """Queue ``item``; None when its class's queue is full (or the class is unknown)."""
        queues = self._queues.get(request_class)
        if queues is None or self._lengths[request_class] >= self._bounds.get(request_class, 0):
            return None
        entry = Waiting(item, request_class, key, now + timeout_s, now)
        fifo = queues.get(key)
        if fifo is None:
            fifo = queues[key] = deque()
        fifo.append(entry)
        n = self._lengths[request_class] = self._lengths[request_class] + 1
        self._total += 1
        if n > self.max_seen[request_class]:
            self.max_seen[request_class] = n
        return entry

    def remove(self, entry: Waiting[T]) -> None:
        """Take ``entry`` out (its client left): its place is freed at once."""
        if entry.gone:
            return
        entry.gone = True
        self._lengths[entry.request_class] -= 1
        self._total -= 1
        queues = self._queues[entry.request_class]
        fifo = queues.get(entry.key)
        if fifo is not None:
            _trim(fifo)
            if not fifo:
                del queues[entry.key]

    def head_priority(self) -> int | None:
        """The class order index of the most urgent waiting request (for "may a newcomer
        of this class pass?"), None when nothing waits."""
        if not self._total:
            return None
        for i, c in enumerate(self._order):
            if self._lengths[c]:
                return i
        return None

    def rank(self, request_class: str) -> int:
        return self._order.index(request_class)

    def pop(self, eligible: Callable[[str], bool] | None = None) -> Waiting[T] | None:
        """The next request to admit: the most urgent class (of those ``eligible``: e.g.
        below their capacity share), the next key in turn."""
        for c in self._order:
            if not self._lengths[c] or (eligible is not None and not eligible(c)):
                continue
            queues = self._queues[c]
            while queues:
                key, fifo = next(iter(queues.items()))
                _trim(fifo)
                if not fifo:
                    del queues[key]
                    continue
                entry = fifo.popleft()
                _trim(fifo)
                if fifo:
                    queues.move_to_end(key)  # this key had its turn
                else:
                    del queues[key]
                entry.gone = True
                self._lengths[c] -= 1
                self._total -= 1
                return entry
        return None

    def expired(self, now: float) -> list[Waiting[T]]:
        """Take out and return every request whose wait passed its deadline."""
        out: list[Waiting[T]] = []
        for c in self._order:
            if not self._lengths[c]:
                continue
            queues = self._queues[c]
            for key in list(queues):
                fifo = queues[key]
                # Deadlines grow along a key's FIFO when its class has one timeout: check all.
                keep = deque(e for e in fifo if not e.gone and e.deadline > now)
                for e in fifo:
                    if not e.gone and e.deadline <= now:
                        e.gone = True
                        self._lengths[c] -= 1
                        self._total -= 1
                        out.append(e)
                if keep:
                    queues[key] = keep
                else:
                    del queues[key]
        return out

    def next_deadline(self) -> float | None:
        if not self._total:
            return None
        best: float | None = None
        for entry in self:
            if best is None or entry.deadline < best:
                best = entry.deadline
        return best

    def __iter__(self) -> Iterator[Waiting[T]]:
        for c in self._order:
            for fifo in self._queues[c].values():
                for e in fifo:
                    if not e.gone:
                        yield e


def _trim(fifo: deque[Waiting[T]]) -> None:
    while fifo and fifo[0].gone:
        fifo.popleft()
