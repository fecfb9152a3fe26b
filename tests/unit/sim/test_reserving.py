"""The simulator's reserving mode (like vLLM): device memory taken at start, KV use moving with
load, a leak past the reservation; and the figures its metrics page says hanode should read."""

from __future__ import annotations

import random

import pytest

from hanode.engines.registry import get_adapter
from hanode.sim.engine_state import EngineState
from hanode.sim.faults import FaultRates
from hanode.sim.metrics_page import SimMetrics, render
from hanode.sim.options import SimOptions


def test_default_follows_vllm() -> None:
    assert SimOptions(port=1).reserve_gpu == 0.9


def test_reserving_device_memory_does_not_move_with_load() -> None:
    e: EngineState[int] = EngineState(2, gpu_mem_base=0.45, reserve=0.9)
    assert (e.gpu_mem, e.kv_usage) == (0.9, 0.0)
    e.submit(1)
    e.submit(2)
    assert (e.gpu_mem, e.kv_usage) == (0.9, 1.0)


def test_leak_grows_past_the_reservation_in_both_modes() -> None:
    reserving: EngineState[int] = EngineState(2, reserve=0.9)
    growing: EngineState[int] = EngineState(2, gpu_mem_base=0.45)
    for e in (reserving, growing):
        e.leaked = 0.06
    assert reserving.gpu_mem == pytest.approx(0.96)
    assert growing.gpu_mem == pytest.approx(0.51)
    reserving.leaked = 0.5
    assert reserving.gpu_mem == 1.0


def test_kv_override_drives_kv_use() -> None:
    e: EngineState[int] = EngineState(4, reserve=0.9)
    e.kv_override = 0.92
    assert e.kv_usage == 0.92 and e.gpu_mem == 0.9
    e.kv_override = None
    assert e.kv_usage == 0.0


def test_leak_fault_is_drawn_like_the_others() -> None:
    rates = FaultRates(random.Random(1), {"leak": 1.0})
    decision = rates.decide()
    assert decision.leak and decision.any and decision.terminal is None


def test_page_says_what_hanode_reads() -> None:
    m = SimMetrics()
    m.tpot.observe(0.005)
    m.ttft.observe(0.03)
    page = render("m", m, 0, 0, 0.0, 0.9, reserve=0.9).decode()
    seen = get_adapter("vllm").parse_metrics(page)
    assert (seen.reserved_frac, seen.kv_usage, seen.gpu_mem_frac) == (0.9, 0.0, 0.9)
    assert seen.tpot_buckets is not None and seen.ttft_buckets is not None
    grows = get_adapter("vllm").parse_metrics(render("m", m, 0, 0, 0.0, 0.45).decode())
    assert grows.reserved_frac == 0.0  # --reserve-gpu 0: hanode judges device memory
