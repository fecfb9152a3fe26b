"""The node's one set of metrics from several processes (hanode.metrics.merge)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hanode.metrics.merge import Family, Retired, families_of, merge, merged_registry
from hanode.metrics.registry import NodeMetrics


def value(families: list[Family], sample: str, **labels: str) -> float | None:
    want = tuple(sorted(labels.items()))
    for _, _, _, _, samples in families:
        for name, lb, v in samples:
            if name == sample and lb == want:
                return v
    return None


def test_counters_and_histograms_add_up_and_created_takes_the_earliest() -> None:
    regs = [CollectorRegistry() for _ in range(3)]
    for i, r in enumerate(regs):
        c = Counter("x", "doc", ["k"], registry=r)
        c.labels("a").inc(i + 1)
        h = Histogram("lat", "doc", buckets=(0.1, 1.0), registry=r)
        h.observe(0.05 * (i + 1))
    merged = merge(families_of(r) for r in regs)
    assert value(merged, "x_total", k="a") == 6.0
    assert value(merged, "lat_count") == 3.0
    assert value(merged, "lat_bucket", le="0.1") == 2.0  # 0.05 and 0.10
    created = [value(families_of(r), "x_created", k="a") for r in regs]
    assert value(merged, "x_created", k="a") == min(c for c in created if c is not None)


def test_gauges_add_up_where_they_count_and_take_the_worst_otherwise() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    for reg, queue, pressure, ratio in ((a, 3, 0.2, 0.99), (b, 4, 0.7, 0.95)):
        Gauge("hanode_admission_queue_length", "d", registry=reg).set(queue)
        Gauge("hanode_admission_pressure", "d", registry=reg).set(pressure)
        Gauge("hanode_slo_success_ratio", "d", registry=reg).set(ratio)
    merged = merge([families_of(a), families_of(b)])
    assert value(merged, "hanode_admission_queue_length") == 7.0
    assert value(merged, "hanode_admission_pressure") == 0.7
    assert value(merged, "hanode_slo_success_ratio") == 0.95


def test_retired_workers_keep_their_counters_not_their_gauges() -> None:
    reg = CollectorRegistry()
    Counter("x", "doc", registry=reg).inc(5)
    Gauge("g", "doc", registry=reg).set(9)
    retired = Retired()
    retired.fold(families_of(reg))
    retired.fold(families_of(reg))  # a second worker with the same counts
    assert value(retired.families, "x_total") == 10.0
    assert value(retired.families, "g") is None
    assert value(retired.families, "x_created") is None


def test_the_merged_registry_exposes_each_family_once() -> None:
    own, worker = NodeMetrics(), NodeMetrics()
    own.observe_request("m", "r1", 200, True, True, True, 0.01, None)
    worker.observe_request("m", "r1", 200, True, True, True, 0.01, None)
    worker.observe_request("m", "r2", 500, False, False, False, 0.01, None)
    text = generate_latest(merged_registry(own.registry, lambda: [families_of(worker.registry)]))
    lines = text.decode().splitlines()
    assert sum(1 for ln in lines if ln.startswith("# TYPE hanode_requests_total ")) == 1
    assert 'hanode_requests_total{model="m",replica="r1",status="200"} 2.0' in lines
    assert 'hanode_requests_total{model="m",replica="r2",status="500"} 1.0' in lines


@given(
    st.lists(st.tuples(st.integers(0, 3), st.sampled_from("abc"), st.integers(1, 5)), max_size=40)
)
def test_splitting_increments_over_processes_does_not_change_the_totals(
    incs: list[tuple[int, str, int]],
) -> None:
    one = CollectorRegistry()
    many = [CollectorRegistry() for _ in range(4)]
    c_one = Counter("x", "doc", ["k"], registry=one)
    c_many = [Counter("x", "doc", ["k"], registry=r) for r in many]
    for proc, label, amount in incs:
        c_one.labels(label).inc(amount)
        c_many[proc].labels(label).inc(amount)
    merged = merge(families_of(r) for r in many)
    for label in "abc":
        assert (value(merged, "x_total", k=label) or 0.0) == (
            value(families_of(one), "x_total", k=label) or 0.0
        )
