"""Seed pinning: which requests get a seed, and the seed's range."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hanode.policies.seed import pin_seed


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"model": "m", "messages": []},
        {"temperature": None},
        {"temperature": 1},
        {"temperature": 0.7},
        {"temperature": 2.0},
        {"seed": None, "temperature": 0.5},
    ],
)
def test_sampled_requests_without_seed_get_one(body: dict[str, object]) -> None:
    copy = dict(body)
    assert pin_seed(body, lambda: 12345) == 12345
    assert body == copy  # the caller adds it


@pytest.mark.parametrize(
    "body",
    [
        {"seed": 7},
        {"seed": 0, "temperature": 1.0},
        {"temperature": 0},
        {"temperature": 0.0},
        {"temperature": -1.0},
        {"temperature": "1"},
        {"temperature": True},
        {"temperature": math.nan},
        {"temperature": math.inf},
    ],
)
def test_left_alone(body: dict[str, object]) -> None:
    calls: list[int] = []

    def rand_bits() -> int:
        calls.append(1)
        return 1

    assert pin_seed(body, rand_bits) is None
    assert calls == []


@pytest.mark.parametrize("raw", [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**64 + 5, -1])
def test_seed_is_31_bit_non_negative(raw: int) -> None:
    seed = pin_seed({}, lambda: raw)
    assert seed is not None and 0 <= seed < 2**31


@given(st.integers(), st.none() | st.floats(0.0, 2.0, exclude_min=True))
def test_any_bits_give_a_valid_seed(raw: int, temperature: float | None) -> None:
    seed = pin_seed({"temperature": temperature}, lambda: raw)
    assert seed is not None and 0 <= seed < 2**31
