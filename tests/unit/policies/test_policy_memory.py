"""GPU memory pressure per engine kind, and growth past the learned baseline."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.memory import GrowthWatch, PressureSource, memory_pressure, reserving


@pytest.mark.parametrize(
    ("adapter", "reported", "expected"),
    [
        (True, None, True),  # vLLM, SGLang, TGI with no figure: they reserve
        (True, 0.9, True),
        (True, 0.0, False),  # the simulator's --reserve-gpu 0 says so
        (False, None, False),  # llama.cpp, generic OpenAI servers
        (False, 0.5, True),
        (True, math.nan, True),
    ],
)
def test_reserving(adapter: bool, reported: float | None, expected: bool) -> None:
    assert reserving(adapter, reported) is expected


def test_reserving_engine_pressure_is_kv_whatever_the_device_reads() -> None:
    assert memory_pressure(True, 0.30, 0.91) == (0.30, PressureSource.KV)
    assert memory_pressure(True, None, 0.91) == (None, PressureSource.KV)  # TGI: unknown


def test_other_engines_pressure_is_device_memory() -> None:
    assert memory_pressure(False, 0.30, 0.61) == (0.61, PressureSource.DEVICE)
    assert memory_pressure(False, None, math.inf) == (None, PressureSource.DEVICE)


def test_baseline_is_learned_when_serving_and_growth_raises_once() -> None:
    w = GrowthWatch(0.05, frozenset({"r"}))
    assert w.update("r", 0.90, serving=False) == (None, None)  # loading: no baseline
    assert w.update("r", 0.91, serving=True) == (0.0, None)
    assert w.baseline == 0.91
    growth, change = w.update("r", 0.97, serving=True)
    assert growth == pytest.approx(0.06)
    assert change is not None and change.raised and change.baseline == 0.91
    assert w.update("r", 0.98, serving=True)[1] is None  # raised once
    growth, change = w.update("r", 0.93, serving=True)  # 0.02 < 0.05 / 2: cleared
    assert change is not None and not change.raised


def test_hysteresis_keeps_a_hovering_reading_raised() -> None:
    w = GrowthWatch(0.05, frozenset({"r"}))
    w.update("r", 0.90, True)
    assert w.update("r", 0.95, True)[1] is not None
    assert w.update("r", 0.93, True)[1] is None  # 0.03: above half the mark
    assert w.raised


def test_relearn_after_wake_takes_the_new_reading() -> None:
    w = GrowthWatch(0.05, frozenset({"r"}))
    w.update("r", 0.90, True)
    w.relearn()
    assert w.update("r", 0.93, True) == (0.0, None)
    assert w.baseline == 0.93


def test_stopping_to_serve_forgets_the_baseline_and_clears() -> None:
    w = GrowthWatch(0.05, frozenset({"r"}))
    w.update("r", 0.90, True)
    w.update("r", 0.99, True)
    growth, change = w.update("r", 0.40, serving=False)  # a restart
    assert growth is None and change is not None and not change.raised
    assert w.update("r", 0.90, True) == (0.0, None)


def test_freed_memory_lowers_the_baseline() -> None:
    w = GrowthWatch(0.05, frozenset({"r"}))
    w.update("r", 0.95, True)
    w.update("r", 0.90, True)
    assert w.baseline == 0.90


def test_shared_gpu_learns_only_when_every_replica_serves() -> None:
    """Two replicas on one GPU: the second one's reservation is not the first one's leak."""
    w = GrowthWatch(0.05, frozenset({"a", "b"}))
    assert w.update("a", 0.45, True) == (None, None)  # b not serving yet
    assert w.update("b", 0.46, False) == (None, None)
    assert w.update("b", 0.90, True) == (0.0, None)  # both serving: baseline 0.90
    assert w.update("a", 0.90, True) == (0.0, None)
    growth, change = w.update("a", 0.96, True)
    assert change is not None and change.raised and growth == pytest.approx(0.06)


@pytest.mark.parametrize("mark", [0.0, -0.1, 1.5, math.nan])
def test_mark_is_validated(mark: float) -> None:
    with pytest.raises(ValueError):
        GrowthWatch(mark, frozenset({"r"}))


@given(st.lists(st.tuples(st.none() | st.floats(allow_nan=True), st.booleans()), max_size=30))
def test_growth_is_never_negative_and_raised_matches_changes(
    readings: list[tuple[float | None, bool]],
) -> None:
    w = GrowthWatch(0.05, frozenset({"r"}))
    raised = False
    for used, serving in readings:
        growth, change = w.update("r", used, serving)
        assert growth is None or 0.0 <= growth <= 1.0
        if change is not None:
            assert change.raised is not raised
            raised = change.raised
        assert w.raised is raised
