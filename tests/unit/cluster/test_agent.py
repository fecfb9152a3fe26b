"""The agent's reporting: hysteresis keeps consensus traffic low, a heartbeat keeps it fresh."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from hanode.cluster.agent import ObservationReporter, ReportHysteresis, should_report
from hanode.pool.replica import HealthLevel, Observation

H = ReportHysteresis(heartbeat_s=10.0)
BASE = Observation(
    level=HealthLevel.HEALTHY,
    gpu_mem_frac=0.50,
    kv_usage=0.20,
    queue_depth=10.0,
    running=2.0,
    latency_ms=100.0,
    ttft_ms=50.0,
)


def report(new: Observation, last: Observation | None = BASE, age: float = 1.0) -> bool:
    return should_report(last, new, 100.0, 100.0 + age, H)


def test_first_observation_is_always_reported() -> None:
    assert report(BASE, last=None)


def test_unchanged_observation_waits_for_the_heartbeat() -> None:
    assert not report(BASE, age=0.0)
    assert not report(BASE, age=9.99)
    assert report(BASE, age=10.0)


@pytest.mark.parametrize(
    "change",
    [
        {"level": HealthLevel.DEGRADED},
        {"level": HealthLevel.DOWN},
        {"gpu_removed": True},
        {"gpu_mem_frac": 0.52},  # +0.02 absolute
        {"gpu_mem_frac": 0.47},
        {"kv_usage": 0.26},  # +0.06 (>= 0.05)
        {"queue_depth": 13.0},  # +3 (>= 2) and +30 % (>= 25 %)
        {"latency_ms": 121.0},  # +21 %
        {"latency_ms": 79.0},
        {"ttft_ms": 61.0},
        {"gpu_mem_frac": None},  # known -> unknown
        {"latency_ms": None},
    ],
)
def test_significant_changes_are_reported_at_once(change: dict[str, Any]) -> None:
    assert report(replace(BASE, **change), age=0.0)


@pytest.mark.parametrize(
    "change",
    [
        {"gpu_mem_frac": 0.515},  # below the absolute band
        {"kv_usage": 0.24},
        {"queue_depth": 11.5},  # +1.5 < 2
        {"latency_ms": 115.0},  # +15 % < 20 %
        {"ttft_ms": 55.0},
        {"running": 9.0},  # not part of the hysteresis
        {"reason": "L3: something else"},
    ],
)
def test_small_changes_are_not_reported(change: dict[str, Any]) -> None:
    assert not report(replace(BASE, **change), age=0.0)


def test_queue_needs_both_absolute_and_relative_change() -> None:
    deep = replace(BASE, queue_depth=100.0)
    assert not report(replace(deep, queue_depth=103.0), last=deep)  # +3 but only +3 %
    assert report(replace(deep, queue_depth=130.0), last=deep)
    empty = replace(BASE, queue_depth=0.0)
    assert not report(replace(empty, queue_depth=1.0), last=empty)  # +1 < 2
    assert report(replace(empty, queue_depth=2.0), last=empty)


def test_unknown_to_unknown_is_no_change() -> None:
    blank = Observation(level=HealthLevel.HEALTHY)
    assert not report(blank, last=blank)
    assert report(replace(blank, gpu_mem_frac=0.1), last=blank)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reporter_sends_on_change_and_heartbeat_only() -> None:
    sent: list[dict[str, Any]] = []
    clock = Clock()
    rep = ObservationReporter(sent.append, H, clock=clock, wall=lambda: 5e9)
    rep.observe("r1", BASE)
    assert len(sent) == 1
    cmd = sent[0]
    assert cmd["op"] == "observe" and cmd["replica"] == "r1" and cmd["ts"] == 5e9
    assert cmd["obs"]["level"] == int(HealthLevel.HEALTHY) and cmd["obs"]["gpu_mem_frac"] == 0.5

    for _ in range(20):  # the checker runs every 0.2 s: nothing new to say
        clock.now += 0.2
        rep.observe("r1", replace(BASE, gpu_mem_frac=0.51))
    assert len(sent) == 1
    clock.now += 6.0  # 10 s after the first report
    rep.observe("r1", BASE)
    assert len(sent) == 2
    rep.observe("r1", replace(BASE, level=HealthLevel.DOWN))
    assert len(sent) == 3 and sent[-1]["obs"]["level"] == 0
    rep.observe("r2", BASE)  # each replica has its own memory
    assert len(sent) == 4


def test_hysteresis_compares_with_what_was_sent_not_with_the_last_seen() -> None:
    sent: list[dict[str, Any]] = []
    clock = Clock()
    rep = ObservationReporter(sent.append, H, clock=clock)
    rep.observe("r1", BASE)
    for gpu in (0.505, 0.51, 0.515, 0.52):  # creeping up in small steps
        clock.now += 0.2
        rep.observe("r1", replace(BASE, gpu_mem_frac=gpu))
    assert len(sent) == 2 and sent[-1]["obs"]["gpu_mem_frac"] == 0.52


def test_forget_makes_the_next_observation_go_out() -> None:
    sent: list[dict[str, Any]] = []
    clock = Clock()
    rep = ObservationReporter(sent.append, H, clock=clock)
    rep.observe("r1", BASE)
    rep.observe("r1", BASE)
    assert len(sent) == 1
    rep.forget("r1")  # e.g. the write was lost
    rep.observe("r1", BASE)
    assert len(sent) == 2
    rep.forget("unknown")  # harmless
