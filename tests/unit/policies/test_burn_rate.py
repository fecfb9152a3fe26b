"""Burn rates against a hand-computed example, and their windows (pure)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.burn_rate import SloSeries, burn_rate


def test_hand_computed_example() -> None:
    # Target 99.9 %: the budget is 0.1 %. In the last hour 1000 requests, 20 failed: 2 % errors
    # = 20x the budget. 15 of the failures came in the last 5 minutes out of 100 requests:
    # 15 % = 150x. Everything older than an hour (3000 good requests 2 h ago) only counts in
    # the 6 h and 3 d windows: 20 bad of 4000 = 0.5 % = 5x.
    s = SloSeries(0.999)
    t0 = 100_000 * 60.0
    for i in range(3000):
        s.record(t0 - 7200 + i * 0.01, True, 0.1)
    for i in range(900):  # 55..5 minutes ago: 895 good, 5 bad
        s.record(t0 - 3300 + i * 3.0, i >= 5, 0.1)
    for i in range(100):  # the last 5 minutes (bucket aligned)
        s.record(t0 - 240 + i, i >= 15, 0.1)
    assert math.isclose(s.burn(t0, "5m"), 150.0)
    assert math.isclose(s.burn(t0, "1h"), 20.0)
    # 30 m: 380 good requests of the 55-minute run fall inside it, plus the last 100.
    assert math.isclose(s.burn(t0, "30m"), 15 / 480 / 0.001)
    assert math.isclose(s.burn(t0, "6h"), 5.0)
    assert math.isclose(s.burn(t0, "3d"), 5.0)
    report = s.report("m", "interactive", t0)
    # 5m/1h: 150x and 20x > 14.4; 30m/6h: 31x but 6 h only 5x < 6; 6h/3d: 5x > 1 on both.
    assert report.alerts == ("5m/1h", "6h/3d")
    assert report.success_rate_1h == 0.98


def test_no_traffic_burns_nothing() -> None:
    assert burn_rate(0, 0, 0.99) == 0.0
    assert SloSeries(0.99).burn(0.0, "1h") == 0.0


@given(st.integers(1, 10_000), st.data(), st.sampled_from([0.9, 0.95, 0.99, 0.999]))
def test_burn_is_error_rate_over_budget(total: int, data: st.DataObject, target: float) -> None:
    bad = data.draw(st.integers(0, total))
    assert math.isclose(burn_rate(total, bad, target), bad / total / (1 - target))
