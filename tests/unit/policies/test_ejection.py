"""The ejection cap on peers' breakers (pure)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.ejection import may_eject_for_peer


def test_examples() -> None:
    assert [may_eject_for_peer(4, e, 50.0) for e in range(4)] == [True, True, False, False]
    assert not may_eject_for_peer(1, 0, 50.0)  # a lone replica: each router finds out itself
    assert may_eject_for_peer(1, 0, 100.0)
    assert not may_eject_for_peer(10, 0, 0.0)
    assert [may_eject_for_peer(3, e, 34.0) for e in range(3)] == [True, False, False]
    assert not may_eject_for_peer(0, 0, 100.0)
    assert not may_eject_for_peer(5, 0, float("nan"))


@given(
    serving=st.integers(min_value=0, max_value=500),
    percent=st.floats(min_value=0.0, max_value=100.0),
)
def test_peers_never_eject_past_the_cap(serving: int, percent: float) -> None:
    ejected = 0
    while ejected <= serving and may_eject_for_peer(serving, ejected, percent):
        ejected += 1
    assert ejected <= math.floor(serving * percent / 100.0 + 1e-9)
    assert ejected <= serving
