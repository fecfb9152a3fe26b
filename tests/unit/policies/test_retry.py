"""Retry budget (exact bound over random sequences), full-jitter backoff, retry decisions and the
client deadline header."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.policies.failure import FailureClass as F
from hanode.policies.retry import (
    RETRYABLE,
    RetryBudget,
    RetryPolicy,
    backoff_delay,
    deadline_from_header,
)


def window(b: RetryBudget, now: float) -> tuple[int, int]:
    """Requests and retries in the budget's window at ``now``, read from its state (nothing in
    the router needs them, so the budget has no accessor)."""
    b._advance(now)
    return b._requests, b._retries


# ---------------------------------------------------------------- budget: examples


def test_floor_allows_retries_without_traffic() -> None:
    b = RetryBudget(ratio=0.2, min_retries_per_s=3.0, window_s=10.0)
    granted = sum(b.try_spend(0.0) for _ in range(100))
    assert granted == 30  # 3/s over 10 s


def test_ratio_adds_to_the_floor() -> None:
    b = RetryBudget(ratio=0.2, min_retries_per_s=0.0, window_s=10.0)
    for _ in range(100):
        b.record_request(0.0)
    assert sum(b.try_spend(0.5) for _ in range(100)) == 20


def test_no_floor_no_requests_no_retries() -> None:
    b = RetryBudget(ratio=0.5, min_retries_per_s=0.0)
    assert not b.try_spend(0.0)


def test_budget_refills_as_the_window_slides() -> None:
    b = RetryBudget(ratio=0.0, min_retries_per_s=1.0, window_s=10.0)
    assert sum(b.try_spend(0.0) for _ in range(20)) == 10
    assert not b.try_spend(9.99)
    assert b.try_spend(10.0)  # bucket 0 slid out
    assert sum(b.try_spend(10.0) for _ in range(20)) == 9


def test_long_idle_forgets_everything() -> None:
    b = RetryBudget(ratio=1.0, min_retries_per_s=0.0)
    for _ in range(50):
        b.record_request(0.0)
    assert b.try_spend(1.0)
    assert window(b, 1e6) == (0, 0)
    assert not b.try_spend(1e6)  # nothing available: ratio x 0 requests, no floor


def test_time_going_back_counts_as_now() -> None:
    b = RetryBudget(ratio=0.0, min_retries_per_s=0.1, window_s=10.0)
    assert b.try_spend(50.0)
    assert not b.try_spend(45.0)


@pytest.mark.parametrize(
    "kw",
    [
        {"ratio": -0.1},
        {"min_retries_per_s": -1.0},
        {"window_s": 0.0},
        {"window_s": math.inf},
        {"buckets": 0},
        {"ratio": math.nan},
    ],
)
def test_budget_rejects_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryBudget(**kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- budget: the exact bound

# Times are multiples of 1/4 s and bucket widths are 1 s or 1.25 s, so every comparison below is
# exact in binary floating point.
STEP = 0.25


@settings(max_examples=400, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 12), st.booleans(), st.integers(1, 8)), min_size=1, max_size=120
    ),
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
    per_s=st.sampled_from([0.0, 0.1, 0.5, 3.0]),
    shape=st.sampled_from([(10.0, 10), (5.0, 4), (3.0, 1)]),
)
def test_granted_retries_never_exceed_the_bound(
    events: list[tuple[int, bool, int]],
    ratio: float,
    per_s: float,
    shape: tuple[float, int],
) -> None:
    """For every grant at t: grants in (t - window + width, t] <= ceil(ratio * R + floor), R being
    the requests in (t - window, t]. Each event waits ``gap`` quarter seconds, then records
    ``count`` requests or attempts ``count`` retries."""
    window_s, buckets = shape
    width = window_s / buckets
    floor = per_s * window_s
    b = RetryBudget(ratio, per_s, window_s, buckets=buckets)
    requests: list[float] = []
    grants: list[float] = []
    now = 0.0
    for gap, is_request, count in events:
        now += gap * STEP
        for _ in range(count):
            if is_request:
                b.record_request(now)
                requests.append(now)
            elif b.try_spend(now):
                grants.append(now)
                r = sum(1 for s in requests if s > now - window_s)
                g = sum(1 for s in grants if s > now - window_s + width)
                assert g <= math.ceil(ratio * r + floor)


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 40), min_size=1, max_size=200),
    ratio=st.sampled_from([0.0, 0.2, 1.0]),
    per_s=st.sampled_from([0.0, 3.0]),
)
def test_budget_is_used_when_available(gaps: list[int], ratio: float, per_s: float) -> None:
    """The budget is a cap, not a throttle: a retry is refused only when the window is full."""
    b = RetryBudget(ratio, per_s, 10.0)
    now = 0.0
    for gap in gaps:
        now += gap * STEP
        b.record_request(now)
        requests, retries = window(b, now)
        assert b.try_spend(now) == (retries < ratio * requests + per_s * 10.0)


def test_budget_memory_is_fixed() -> None:
    b = RetryBudget()
    for i in range(10_000):
        b.record_request(i * 0.01)
        b.try_spend(i * 0.01)
    assert len(b._req) == len(b._ret) == 10


# ---------------------------------------------------------------- backoff


def test_backoff_examples() -> None:
    assert backoff_delay(0, 0.02, 1.0, lambda: 0.5) == pytest.approx(0.01)
    assert backoff_delay(3, 0.02, 1.0, lambda: 0.5) == pytest.approx(0.08)
    assert backoff_delay(10, 0.02, 1.0, lambda: 0.5) == pytest.approx(0.5)  # capped at 1
    assert backoff_delay(0, 0.02, 1.0, lambda: 0.0) == 0.0


@given(
    attempt=st.integers(-5, 5000),
    base=st.floats(0.0, 10.0),
    cap=st.floats(0.0, 100.0),
    r=st.floats(0.0, 1.0),
)
def test_backoff_in_range(attempt: int, base: float, cap: float, r: float) -> None:
    d = backoff_delay(attempt, base, cap, lambda: r)
    assert 0.0 <= d <= min(cap, base * 2.0 ** min(max(attempt, 0), 1000))


def test_backoff_with_nonsense_settings_is_zero() -> None:
    assert backoff_delay(2, -1.0, 1.0, lambda: 0.5) == 0.0
    assert backoff_delay(2, 0.1, math.nan, lambda: 0.5) == 0.0


def test_backoff_uses_default_rand() -> None:
    assert 0.0 <= backoff_delay(4) <= 0.32


# ---------------------------------------------------------------- should_retry


@pytest.mark.parametrize(
    "fc", [F.GPU_OOM, F.TIMEOUT, F.RATE_LIMITED, F.BUSY, F.CONNECTION, F.SERVER_ERROR]
)
def test_retry_replica_failures(fc: F) -> None:
    p = RetryPolicy()
    assert p.should_retry(fc, response_started=False)
    assert not p.should_retry(fc, response_started=True)


@pytest.mark.parametrize("fc", [F.CONTEXT_LENGTH, F.CLIENT_ERROR])
def test_never_retry_the_requests_own_fault(fc: F) -> None:
    assert not RetryPolicy().should_retry(fc, response_started=False)


def test_every_class_is_decided() -> None:
    assert RETRYABLE | {F.CONTEXT_LENGTH, F.CLIENT_ERROR} == set(F)


def test_policy_defaults_and_backoff() -> None:
    p = RetryPolicy()
    assert (p.max_attempts, p.per_try_timeout_s) == (3, 60.0)
    assert p.backoff(1, lambda: 1.0) == pytest.approx(0.04)


# ---------------------------------------------------------------- deadline header


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"30", 30.0),
        (b"2.5", 2.5),
        (b" 7 ", 7.0),
        (b".5", 0.5),
        (b"5.", 5.0),
        (b"600", 60.0),  # a client may shorten the configured deadline, never lengthen it
        (b"75", 60.0),
        (b"59.5", 59.5),
        (None, 60.0),
        (b"", 60.0),
        (b"-3", 60.0),
        (b"0", 60.0),
        (b"nan", 60.0),
        (b"inf", 60.0),
        (b"1_0", 60.0),
        (b"1e3", 60.0),
        (b"abc", 60.0),
        (b"3s", 60.0),
        (b"\xff", 60.0),
        (b"9" * 100, 60.0),
    ],
)
def test_deadline_from_header(value: bytes | None, expected: float) -> None:
    assert deadline_from_header(value, 60.0, 120.0) == expected


def test_deadline_default_is_capped_too() -> None:
    assert deadline_from_header(None, 600.0, 120.0) == 120.0
    assert deadline_from_header(b"300", 600.0, 120.0) == 120.0


@given(st.binary(max_size=40))
def test_deadline_always_in_range(value: bytes) -> None:
    d = deadline_from_header(value, 60.0, 120.0)
    assert 0.0 < d <= 60.0
