"""Weighted power-of-two-choices: draws, tie-breaking, exclusion and observed traffic shares."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.policies.picker import pick
from hanode.pool.snapshot import ModelRoute


def route(weights: dict[str, float]) -> ModelRoute:
    return ModelRoute.build("m", weights)


def scripted(values: Iterable[float]) -> Callable[[], float]:
    it = iter(values)
    return lambda: next(it)


def within_binomial(count: int, n: int, p: float, sds: float = 5.0) -> bool:
    """|count - np| <= sds standard deviations of Binomial(n, p): a false alarm at 5 sd has
    probability ~6e-7 per check, while a real bias of a few percent of n is far outside it."""
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1.0 - p)) + 1e-9


# ---------------------------------------------------------------- examples

AB = route({"a": 1.0, "b": 3.0})  # cumulative (1, 4): rand < 0.25 -> a, else b


def test_empty_route_gives_none() -> None:
    assert pick(route({}), {}) is None
    assert pick(route({"a": 0.0}), {}) is None


def test_single_replica_is_returned_even_if_excluded() -> None:
    r = route({"a": 0.5})
    assert pick(r, {}) == "a"
    assert pick(r, {}, exclude="a") == "a"


def test_draws_follow_cumulative_weights() -> None:
    assert pick(AB, {}, scripted([0.1, 0.1])) == "a"
    assert pick(AB, {}, scripted([0.3, 0.3])) == "b"
    assert pick(AB, {}, scripted([0.25, 0.25])) == "b"  # boundary belongs to the next one


def test_tie_goes_to_first_draw() -> None:
    assert pick(AB, {}, scripted([0.1, 0.9])) == "a"
    assert pick(AB, {}, scripted([0.9, 0.1])) == "b"
    assert pick(AB, {"a": 2, "b": 2}, scripted([0.9, 0.1])) == "b"


def test_less_loaded_draw_wins() -> None:
    assert pick(AB, {"b": 1}, scripted([0.9, 0.1])) == "a"
    assert pick(AB, {"a": 1}, scripted([0.1, 0.9])) == "b"
    assert pick(AB, {"a": 5, "b": 4}, scripted([0.1, 0.9])) == "b"


def test_rounding_up_to_total_stays_in_range() -> None:
    assert pick(AB, {}, scripted([1.0, 1.0])) == "b"


def test_exclude_maps_draws_onto_the_others() -> None:
    r = route({"a": 1.0, "b": 2.0, "c": 1.0})  # without b: a on [0, 1), c on [1, 2)
    assert pick(r, {}, scripted([0.4, 0.4]), exclude="b") == "a"
    assert pick(r, {}, scripted([0.6, 0.6]), exclude="b") == "c"
    assert pick(r, {}, scripted([0.99, 0.99]), exclude="c") == "b"
    assert pick(r, {}, scripted([0.0, 0.0]), exclude="a") == "b"
    assert pick(r, {}, scripted([1.0, 1.0]), exclude="c") == "b"  # rounding guard
    assert pick(r, {}, scripted([0.1, 0.1]), exclude="zz") == "a"  # unknown: ignored


def test_exclude_survives_float_rounding_at_the_top_edge() -> None:
    # total - w_b rounds above w_a here, so the largest rand() lands past the cut-out interval.
    r = route({"a": 14.214385769626338, "b": 259.54702971394113})
    top = 1.0 - 2.0**-53
    assert pick(r, {}, scripted([top, top]), exclude="b") == "a"


def test_rand_called_exactly_twice() -> None:
    calls = 0

    def rand() -> float:
        nonlocal calls
        calls += 1
        return 0.5

    pick(AB, {}, rand)
    pick(AB, {}, rand, exclude="a")
    assert calls == 4


# ---------------------------------------------------------------- properties

weight = st.floats(min_value=1e-9, max_value=1e6)
weight_maps = st.dictionaries(st.sampled_from("abcdefgh"), st.just(0.0) | weight, min_size=1)
# rand() near 1 is where float rounding pushes a draw onto the edge of the cumulative line.
unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True) | st.just(1.0 - 2.0**-53)
loads = st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 5))


@given(weight_maps, loads, unit, unit, st.none() | st.sampled_from("abcdefgh"))
def test_result_is_a_positive_weight_route_member(
    weights: dict[str, float],
    inflight: dict[str, int],
    r1: float,
    r2: float,
    exclude: str | None,
) -> None:
    r = route(weights)
    got = pick(r, inflight, scripted([r1, r2]), exclude)
    if not r.names:
        assert got is None
        return
    assert got in r.names
    assert weights[got] > 0.0
    if exclude is not None and len(r.names) > 1:
        assert got != exclude


@given(weight_maps, loads, unit, unit, st.none() | st.sampled_from("abcdefgh"))
def test_winner_is_the_less_loaded_draw_first_on_ties(
    weights: dict[str, float],
    inflight: dict[str, int],
    r1: float,
    r2: float,
    exclude: str | None,
) -> None:
    r = route(weights)
    # Feeding the same number twice makes both draws land on the same replica: that is the draw.
    first = pick(r, {}, scripted([r1, r1]), exclude)
    second = pick(r, {}, scripted([r2, r2]), exclude)
    got = pick(r, inflight, scripted([r1, r2]), exclude)
    if first is None or second is None:
        assert got is None
        return
    load1, load2 = inflight.get(first, 0), inflight.get(second, 0)
    assert got == (second if load2 < load1 else first)


N = 20_000


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcde"), st.floats(0.05, 1.0), min_size=1),
    st.integers(0, 2**32 - 1),
)
def test_unloaded_shares_follow_weights(weights: dict[str, float], seed: int) -> None:
    r = route(weights)
    rng = random.Random(seed)
    counts = Counter(pick(r, {}, rng.random) for _ in range(N))
    total = sum(weights.values())
    for name, w in weights.items():
        assert within_binomial(counts[name], N, w / total), (name, counts, weights)


@settings(max_examples=25, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcde"), st.floats(0.05, 1.0), min_size=2),
    st.integers(0, 2**32 - 1),
    st.data(),
)
def test_excluded_shares_follow_remaining_weights(
    weights: dict[str, float], seed: int, data: st.DataObject
) -> None:
    r = route(weights)
    exclude = data.draw(st.sampled_from(sorted(weights)))
    rng = random.Random(seed)
    counts = Counter(pick(r, {}, rng.random, exclude) for _ in range(N))
    assert counts[exclude] == 0
    rest = sum(w for n, w in weights.items() if n != exclude)
    for name, w in weights.items():
        if name != exclude:
            assert within_binomial(counts[name], N, w / rest), (name, counts, weights)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_less_loaded_of_two_equal_replicas_is_favoured(seed: int) -> None:
    # a wins unless both draws are b: P(a) = 1 - 1/4 = 3/4, versus 1/2 without load awareness.
    r = route({"a": 1.0, "b": 1.0})
    rng = random.Random(seed)
    counts = Counter(pick(r, {"a": 0, "b": 5}, rng.random) for _ in range(N))
    assert within_binomial(counts["a"], N, 0.75)
