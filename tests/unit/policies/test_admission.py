"""Capacity, router share, pressure and the per-class queues (pure)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.admission import (
    ClassQueues,
    ReplicaLoad,
    model_capacity,
    pressure,
    relative_loads,
    replica_slots,
    router_share,
)


def test_slots_from_limit_weight_and_kv() -> None:
    assert replica_slots(ReplicaLoad(1.0, 8)) == 8
    assert replica_slots(ReplicaLoad(0.5, 8)) == 4
    assert replica_slots(ReplicaLoad(0.01, 8)) == 1  # serving at all: one slot
    assert replica_slots(ReplicaLoad(0.0, 8)) == 0
    # KV full: the engine's batch cannot grow past what it runs.
    assert replica_slots(ReplicaLoad(1.0, 8, kv_usage=0.995, running=5)) == 5
    assert replica_slots(ReplicaLoad(1.0, 8, kv_usage=0.9, running=5)) == 8


def test_an_engine_that_queues_says_its_limit() -> None:
    # The engine runs 4 and queues more: its own max_num_seqs is 4, whatever is configured.
    assert replica_slots(ReplicaLoad(1.0, 32, queue_depth=3, running=4)) == 4
    assert replica_slots(ReplicaLoad(1.0, 32, queue_depth=0, running=4)) == 32


def test_weights_count_relative_to_the_heaviest_replica() -> None:
    # Load lowers every replica's weight alike: the model's capacity stays.
    assert model_capacity(relative_loads([(0.3, 8, None, None, None)] * 2)) == 16
    # A replica ramping up (slow start) at a quarter of the others' weight.
    assert (
        model_capacity(relative_loads([(1.0, 8, None, None, None), (0.25, 8, None, None, None)]))
        == 10
    )
    assert relative_loads([(0.0, 8, None, None, None)]) == []


def test_three_routers_share_the_capacity() -> None:
    cap = model_capacity([ReplicaLoad(1.0, 4), ReplicaLoad(1.0, 4)])
    assert cap == 8
    assert router_share(cap, 1) == 8
    assert router_share(cap, 3) == 3  # together at most 9 = capacity + routers - 1
    assert router_share(0, 3) == 0


@given(st.integers(0, 10_000), st.integers(1, 64))
def test_shares_never_exceed_capacity_by_more_than_rounding(cap: int, routers: int) -> None:
    share = router_share(cap, routers)
    assert share * routers <= cap + routers - 1 or (cap > 0 and share == 1)
    assert (share > 0) == (cap > 0)


@given(st.lists(st.floats(0.01, 1), min_size=1, max_size=8), st.floats(0.01, 1))
def test_capacity_does_not_shrink_when_every_weight_falls_alike(
    weights: list[float], factor: float
) -> None:
    before = model_capacity(relative_loads([(w, 8, None, None, None) for w in weights]))
    after = model_capacity(relative_loads([(w * factor, 8, None, None, None) for w in weights]))
    assert abs(after - before) <= len(weights)  # floor rounding only


def test_pressure() -> None:
    assert pressure(4, 4, 4) == 2.0
    assert pressure(2, 0, 4, memory_share=0.5) == 1.0
    assert pressure(0, 1, 0) == math.inf
    assert pressure(0, 0, 0) == 0.0


def _queues(bound: int = 3) -> ClassQueues[str]:
    return ClassQueues(
        {"interactive": 0, "internal": 1, "batch": 2},
        dict.fromkeys(("interactive", "internal", "batch"), bound),
    )


def test_strict_priority_then_round_robin_by_key() -> None:
    q = _queues(10)
    for i in range(3):
        q.push(f"a{i}", "batch", "a", 0.0, 10)
    q.push("b0", "batch", "b", 0.0, 10)
    q.push("i0", "interactive", "x", 0.0, 10)
    order = []
    while (e := q.pop()) is not None:
        order.append(e.item)
    assert order == ["i0", "a0", "b0", "a1", "a2"]


def test_bounded_and_removal_frees_a_place() -> None:
    q = _queues(2)
    first = q.push("1", "batch", "k", 0.0, 5)
    assert q.push("2", "batch", "k", 0.0, 5) is not None
    assert q.push("3", "batch", "k", 0.0, 5) is None  # full
    assert first is not None
    q.remove(first)
    assert q.length("batch") == 1
    assert q.push("3", "batch", "k", 0.0, 5) is not None
    assert q.max_seen["batch"] == 2


def test_expiry() -> None:
    q = _queues()
    q.push("old", "batch", "k", 0.0, 1.0)
    q.push("new", "batch", "k", 0.5, 1.0)
    assert q.next_deadline() == 1.0
    assert [e.item for e in q.expired(1.0)] == ["old"]
    assert [e.item for e in q] == ["new"]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["push", "pop", "remove", "expire"]),
            st.sampled_from(["interactive", "internal", "batch"]),
            st.sampled_from(["k1", "k2", "k3"]),
        ),
        max_size=200,
    ),
    st.integers(0, 5),
)
def test_queues_stay_bounded_and_consistent(ops: list[tuple[str, str, str]], bound: int) -> None:
    q = _queues(bound)
    live = []
    now = 0.0
    for op, cls, key in ops:
        now += 0.1
        if op == "push":
            e = q.push(object(), cls, key, now, 1.0)
            if e is not None:
                live.append(e)
        elif op == "pop":
            e = q.pop()
            if e is not None:
                # nothing more urgent was waiting
                assert all(q.rank(o.request_class) >= q.rank(e.request_class) for o in q)
                live.remove(e)
        elif op == "remove" and live:
            q.remove(live.pop(0))
        elif op == "expire":
            for e in q.expired(now):
                live.remove(e)
        for c in ("interactive", "internal", "batch"):
            assert 0 <= q.length(c) <= bound
            assert q.max_seen[c] <= bound
        assert len(q) == len(live) == sum(1 for _ in q)
