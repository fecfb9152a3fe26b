"""Degradation policies with hysteresis, the max_tokens floor, the prompt estimate (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.degradation import (
    DegradeConfig,
    DegradeState,
    PromptTooLong,
    degrade,
    prompt_tokens,
)


def test_engage_and_release_at_their_own_levels() -> None:
    s = DegradeState(DegradeConfig(max_tokens=100, temperature=0.5, max_prompt_tokens=10))
    assert s.update(1.0) == []
    assert [c.policy for c in s.update(1.3)] == ["max_tokens"]
    assert [c.policy for c in s.update(1.6)] == ["temperature"]
    assert [c.policy for c in s.update(2.0)] == ["prompt"]
    assert s.update(1.25) == []  # above every release level: all stay engaged
    changes = s.update(0.9)
    assert {(c.policy, c.engaged) for c in changes} == {
        ("max_tokens", False),
        ("temperature", False),
        ("prompt", False),
    }
    assert s.engaged == set()


@given(st.lists(st.floats(0, 5), max_size=100))
def test_hysteresis_never_flaps_between_the_levels(pressures: list[float]) -> None:
    s = DegradeState(DegradeConfig(max_tokens=100))
    for p in pressures:
        before = "max_tokens" in s.engaged
        s.update(p)
        after = "max_tokens" in s.engaged
        if 0.9 < p < 1.2:
            assert before == after


def test_cap_tightens_with_pressure_but_not_below_the_floor() -> None:
    s = DegradeState(DegradeConfig(max_tokens=1000, max_tokens_floor=300))
    s.update(1.2)
    assert s.cap() == 1000
    s.update(2.4)
    assert s.cap() == 500
    s.update(12.0)
    assert s.cap() == 300  # the floor: a reasoning model keeps room to answer
    body = {"max_tokens": 5000}
    assert degrade(s, body) == ["max_tokens"]
    assert body["max_tokens"] == 300
    body = {"max_tokens": 10}
    assert degrade(s, body) == []  # already below the cap: untouched


def test_temperature_and_prompt() -> None:
    s = DegradeState(DegradeConfig(temperature=0.3, max_prompt_tokens=5))
    s.update(3.0)
    body = {"temperature": 1.0, "prompt": "abcd"}
    assert degrade(s, body) == ["temperature"]
    assert body["temperature"] == 0.3
    with pytest.raises(PromptTooLong):
        degrade(s, {"prompt": "x" * 100})


def test_prompt_estimate() -> None:
    assert prompt_tokens({"prompt": "abcdefgh"}) == 2
    assert prompt_tokens({"prompt": [1, 2, 3]}) == 3
    assert prompt_tokens({"messages": [{"role": "user", "content": "x" * 40}]}) == 10
