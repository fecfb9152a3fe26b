"""combine_level: the lowest failing layer decides."""

from __future__ import annotations

import pytest

from hanode.policies.level import combine_level
from hanode.pool.replica import HealthLevel

D, U, G, H = HealthLevel.DOWN, HealthLevel.UNREADY, HealthLevel.DEGRADED, HealthLevel.HEALTHY


@pytest.mark.parametrize(
    ("l1", "l2", "l3", "expected"),
    [
        (False, False, False, D),
        (False, False, True, D),
        (False, True, False, D),
        (False, True, True, D),
        (True, False, False, U),
        (True, False, True, U),
        (True, True, False, G),
        (True, True, True, H),
    ],
)
def test_combine_level(l1: bool, l2: bool, l3: bool, expected: HealthLevel) -> None:
    assert combine_level(l1, l2, l3) is expected


def test_serving_only_when_l1_and_l2_pass() -> None:
    assert combine_level(True, True, False).serving
    assert not combine_level(True, False, True).serving
    assert not combine_level(False, True, True).serving
