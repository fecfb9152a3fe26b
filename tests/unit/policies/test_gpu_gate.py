"""GPU memory gate: thresholds, REMOVE hysteresis, unknown readings, and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.gpu_gate import GpuLevel, GpuMemoryGate

N, P, RD, RM = GpuLevel.NORMAL, GpuLevel.PREPARE, GpuLevel.REDUCE, GpuLevel.REMOVE
ORDER = (N, P, RD, RM)  # by severity (StrEnum comparison would be alphabetical)


@pytest.mark.parametrize(
    ("frac", "level"),
    [
        (0.0, N),
        (0.7999, N),
        (0.80, P),
        (0.8999, P),
        (0.90, RD),
        (0.9499, RD),
        (0.95, RM),
        (1.2, RM),
    ],
)
def test_thresholds_are_at_or_above(frac: float, level: GpuLevel) -> None:
    assert GpuMemoryGate().update(frac) == (level, None if level is N else N)


def test_update_reports_changes_only() -> None:
    g = GpuMemoryGate()
    assert g.update(0.5) == (N, None)
    assert g.update(0.85) == (P, N)
    assert g.update(0.86) == (P, None)
    assert g.update(0.92) == (RD, P)
    assert g.update(0.81) == (P, RD)  # only REMOVE has hysteresis
    assert g.update(0.10) == (N, P)


def test_remove_is_left_only_below_recover() -> None:
    g = GpuMemoryGate()
    assert g.update(0.96) == (RM, N)
    assert g.update(0.94) == (RM, None)
    assert g.update(0.90) == (RM, None)
    assert g.update(0.899) == (P, RM)


def test_recover_above_reduce_returns_to_reduce() -> None:
    g = GpuMemoryGate(recover=0.93)
    g.update(0.97)
    assert g.update(0.92) == (RD, RM)


def test_unknown_keeps_the_level() -> None:
    g = GpuMemoryGate()
    g.update(0.91)
    assert g.update(None) == (RD, None)
    assert g.update(math.nan) == (RD, None)
    assert g.level is RD


@pytest.mark.parametrize(
    "kw",
    [{"prepare": 0.0}, {"prepare": 0.95}, {"reduce": 0.99}, {"recover": 0.96}],
)
def test_rejects_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GpuMemoryGate(**kw)


READING = st.none() | st.floats(-0.1, 1.2) | st.just(math.nan)


@given(st.lists(READING, max_size=60))
def test_remove_left_only_below_recover(readings: list[float | None]) -> None:
    g = GpuMemoryGate()
    for frac in readings:
        before = g.level
        level, prev = g.update(frac)
        assert level is g.level
        assert (prev is None) == (level is before)
        if prev is not None:
            assert prev is before
        if before is RM and level is not RM:
            assert frac is not None and frac < g.recover
        if frac is None or math.isnan(frac):
            assert level is before


@given(st.floats(0.0, 1.2), st.floats(0.0, 1.2), st.lists(st.floats(0.0, 0.9499), max_size=10))
def test_levels_are_monotone_without_hysteresis(a: float, b: float, history: list[float]) -> None:
    """Outside REMOVE the level is a function of the reading alone, and rises with it."""
    lo, hi = sorted((a, b))
    g1, g2 = GpuMemoryGate(), GpuMemoryGate()
    for frac in history:  # any history that never reached REMOVE
        g1.update(frac)
        g2.update(frac)
    l1, _ = g1.update(lo)
    l2, _ = g2.update(hi)
    assert ORDER.index(l1) <= ORDER.index(l2)
    assert l1 is GpuMemoryGate().classify(lo)
