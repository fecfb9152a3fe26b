"""RiseFall debouncing: streaks flip the state, blips never do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.rise_fall import RiseFall


def feed(rf: RiseFall, results: list[bool]) -> list[bool]:
    return [rf.record(ok) for ok in results]


def test_rises_after_rise_successes() -> None:
    rf = RiseFall(rise=3, fall=2)
    assert rf.up is False
    assert feed(rf, [True, True, True]) == [False, False, True]


def test_falls_after_fall_failures() -> None:
    rf = RiseFall(rise=3, fall=2, up=True)
    assert feed(rf, [False, False]) == [True, False]


def test_interrupted_streak_starts_over() -> None:
    rf = RiseFall(rise=3, fall=3)
    assert feed(rf, [True, True, False, True, True]) == [False] * 5
    assert rf.record(True) is True


def test_rise_and_fall_of_one_follow_every_result() -> None:
    rf = RiseFall(rise=1, fall=1)
    assert feed(rf, [True, False, True]) == [True, False, True]


def test_force_sets_state_and_forgets_streak() -> None:
    rf = RiseFall(rise=3, fall=3)
    feed(rf, [True, True])
    rf.force(False)
    assert rf.record(True) is False  # the two earlier successes no longer count
    rf.force(True)
    assert rf.up is True
    assert rf.record(True) is True


@pytest.mark.parametrize(("rise", "fall"), [(0, 1), (1, 0), (-1, 3)])
def test_counts_must_be_positive(rise: int, fall: int) -> None:
    with pytest.raises(ValueError):
        RiseFall(rise=rise, fall=fall)


def test_has_slots() -> None:
    with pytest.raises(AttributeError):
        RiseFall(1, 1).other = 1  # type: ignore[attr-defined]


counts = st.integers(min_value=1, max_value=6)


@given(counts, counts, st.booleans(), st.lists(st.booleans(), max_size=60))
def test_flips_only_after_the_required_streak(
    rise: int, fall: int, up: bool, results: list[bool]
) -> None:
    rf = RiseFall(rise=rise, fall=fall, up=up)
    state = up
    for i, ok in enumerate(results):
        new = rf.record(ok)
        assert new is rf.up
        if new != state:
            need = rise if new else fall
            assert new is ok
            assert i + 1 >= need
            assert all(r is ok for r in results[i + 1 - need : i + 1])
        state = new


@given(counts, counts, st.booleans(), st.lists(st.booleans(), max_size=30), st.booleans())
def test_a_full_streak_always_settles_the_state(
    rise: int, fall: int, up: bool, prefix: list[bool], ok: bool
) -> None:
    rf = RiseFall(rise=rise, fall=fall, up=up)
    feed(rf, prefix)
    feed(rf, [ok] * (rise if ok else fall))
    assert rf.up is ok


@given(
    st.integers(min_value=2, max_value=6),
    st.integers(min_value=2, max_value=6),
    st.booleans(),
    st.integers(min_value=0, max_value=20),
    st.integers(min_value=0, max_value=20),
)
def test_a_single_blip_never_flips(
    rise: int, fall: int, steady: bool, before: int, after: int
) -> None:
    rf = RiseFall(rise=rise, fall=fall, up=steady)
    states = feed(rf, [steady] * before + [not steady] + [steady] * after)
    assert states == [steady] * len(states)
