from __future__ import annotations

import pytest

from hanode.sim.engine_state import EngineState


def test_capacity_queue_and_release_order() -> None:
    e: EngineState[str] = EngineState(2, gpu_mem_base=0.5)
    assert e.submit("a") and e.submit("b")
    assert not e.submit("c") and not e.submit("d")
    assert (e.running, e.waiting, e.kv_usage) == (2, 2, 1.0)
    assert e.gpu_mem == pytest.approx(0.8)
    assert e.release() == ["c"]
    assert (e.running, e.waiting) == (2, 1)
    assert e.cancel_waiting("d") and not e.cancel_waiting("d")
    assert e.release() == []
    assert e.release() == []
    assert (e.running, e.waiting, e.kv_usage) == (0, 0, 0.0)
    assert e.gpu_mem == pytest.approx(0.5)
    assert e.release() == [] and e.running == 0  # never negative


def test_new_requests_do_not_overtake_waiting_ones() -> None:
    e: EngineState[int] = EngineState(1)
    assert e.submit(1)
    assert not e.submit(2)
    e.running = 0  # a slot frees without release(): the queue still goes first
    assert not e.has_room
    assert not e.submit(3)


def test_gpu_override_and_capacity_change() -> None:
    e: EngineState[int] = EngineState(1, gpu_mem_base=0.45)
    e.submit(1)
    e.submit(2)
    e.submit(3)
    e.gpu_mem_override = 0.96
    assert e.gpu_mem == 0.96
    e.gpu_mem_override = None
    assert e.gpu_mem == pytest.approx(0.75)
    assert e.set_capacity(3) == [2, 3]
    assert e.kv_usage == 1.0
    with pytest.raises(ValueError):
        e.set_capacity(0)
