"""Replica circuit breaker: one rule per failure class, half-open probing, and invariants over
random sequences of results and times."""

from __future__ import annotations

import pytest

from hanode.policies.breaker import BreakerConfig, BreakerState, ReplicaBreaker, Transition
from hanode.policies.failure import FailureClass as F

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
EPS = 1e-6  # (now + d) - now may exceed d by a rounding error


def breaker(**kw: float) -> ReplicaBreaker:
    return ReplicaBreaker(BreakerConfig(**kw))  # type: ignore[arg-type]


def states(ts: list[Transition]) -> list[tuple[BreakerState, BreakerState]]:
    return [(t.from_state, t.to_state) for t in ts]


def trip(b: ReplicaBreaker, now: float) -> None:
    """Open ``b`` with a refused connection."""
    assert states(b.on_failure(F.CONNECTION, now, refused=True)) == [(CLOSED, OPEN)]


# ---------------------------------------------------------------- closed, fast path


def test_new_breaker_is_closed_allows_and_has_full_weight() -> None:
    b = breaker()
    assert b.state is CLOSED
    assert b.allow(0.0)
    assert b.weight_factor(0.0) == 1.0
    assert b.on_success(0.0) == []


# ---------------------------------------------------------------- request's fault


@pytest.mark.parametrize("fc", [F.CONTEXT_LENGTH, F.CLIENT_ERROR])
def test_request_faults_never_count(fc: F) -> None:
    b = breaker()
    for i in range(100):
        assert b.on_failure(fc, float(i)) == []
        assert b.allow(float(i))
    assert b.state is CLOSED
    assert b.weight_factor(100.0) == 1.0
    snap = b.snapshot(100.0)
    assert snap["consecutive_failures"] == 0 and snap["last_failure_class"] is None


def test_request_fault_does_not_break_a_failure_streak() -> None:
    b = breaker(consecutive_failures=3)
    b.on_failure(F.SERVER_ERROR, 0.0)
    b.on_failure(F.SERVER_ERROR, 0.0)
    b.on_failure(F.CONTEXT_LENGTH, 0.0)
    assert states(b.on_failure(F.SERVER_ERROR, 0.0)) == [(CLOSED, OPEN)]


# ---------------------------------------------------------------- GPU OOM


def test_oom_cuts_weight_at_once_and_climbs_back_linearly() -> None:
    b = breaker()
    assert b.on_failure(F.GPU_OOM, 100.0) == []
    assert b.state is CLOSED and b.allow(100.0)
    assert b.weight_factor(100.0) == pytest.approx(0.25)
    assert b.weight_factor(115.0) == pytest.approx(0.625)
    assert b.weight_factor(130.0) == 1.0
    assert b.weight_factor(1000.0) == 1.0


def test_new_oom_reapplies_the_cut() -> None:
    b = breaker()
    b.on_failure(F.GPU_OOM, 0.0)
    assert b.weight_factor(20.0) == pytest.approx(0.75)
    b.on_failure(F.GPU_OOM, 20.0)
    assert b.weight_factor(20.0) == pytest.approx(0.25)


def test_three_ooms_within_window_trip() -> None:
    b = breaker()
    b.on_failure(F.GPU_OOM, 0.0)
    b.on_success(1.0)  # successes between OOMs do not save the replica
    b.on_failure(F.GPU_OOM, 10.0)
    ts = b.on_failure(F.GPU_OOM, 30.0)
    assert states(ts) == [(CLOSED, OPEN)]
    assert ts[0].failure_class is F.GPU_OOM
    assert not b.allow(30.0)
    assert b.weight_factor(30.0) == 0.0


def test_ooms_spread_over_more_than_window_do_not_trip() -> None:
    b = breaker()
    for t in (0.0, 20.0, 40.1, 60.2, 80.3):
        assert b.on_failure(F.GPU_OOM, t) == []
    assert b.state is CLOSED


def test_weight_climbs_from_the_cut_after_oom_trip_recovers() -> None:
    b = breaker()
    for _ in range(3):
        b.on_failure(F.GPU_OOM, 0.0)
    assert b.state is OPEN
    assert b.allow(5.0)  # half-open probe
    assert b.weight_factor(5.0) == pytest.approx(0.25)
    assert states(b.on_success(6.0)) == [(OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert b.weight_factor(6.0) == pytest.approx(0.25)
    assert b.weight_factor(21.0) == pytest.approx(0.625)
    assert b.weight_factor(36.0) == 1.0


# ---------------------------------------------------------------- timeouts


def test_three_consecutive_timeouts_trip() -> None:
    b = breaker()
    assert b.on_failure(F.TIMEOUT, 0.0) == []
    assert b.on_failure(F.TIMEOUT, 1.0) == []
    ts = b.on_failure(F.TIMEOUT, 2.0)
    assert states(ts) == [(CLOSED, OPEN)] and ts[0].failure_class is F.TIMEOUT


def test_success_resets_timeout_streak() -> None:
    b = breaker()
    for i in range(10):
        b.on_failure(F.TIMEOUT, float(i))
        b.on_failure(F.TIMEOUT, float(i))
        b.on_success(float(i))
    assert b.state is CLOSED


# ---------------------------------------------------------------- 429 and 503


def test_rate_limited_pauses_without_counting() -> None:
    b = breaker()
    assert b.on_failure(F.RATE_LIMITED, 10.0, retry_after=3.0) == []
    assert b.state is CLOSED
    assert not b.allow(10.0) and not b.allow(12.9)
    assert b.allow(13.0)
    assert b.snapshot(13.0)["consecutive_failures"] == 0
    assert b.weight_factor(11.0) == 1.0


def test_rate_limited_default_and_cap() -> None:
    b = breaker()
    b.on_failure(F.RATE_LIMITED, 0.0)  # no Retry-After: 2 s
    assert not b.allow(1.9) and b.allow(2.0)
    b.on_failure(F.RATE_LIMITED, 10.0, retry_after=3600.0)  # capped at 60 s
    assert not b.allow(69.9) and b.allow(70.0)
    b.on_failure(F.RATE_LIMITED, 100.0, retry_after=-5.0)  # nonsense: default
    assert not b.allow(101.9) and b.allow(102.0)
    b.on_failure(F.RATE_LIMITED, 200.0, retry_after=float("nan"))
    assert not b.allow(201.9) and b.allow(202.0)


def test_shorter_pause_does_not_shorten_a_longer_one() -> None:
    b = breaker()
    b.on_failure(F.RATE_LIMITED, 0.0, retry_after=10.0)
    b.on_failure(F.RATE_LIMITED, 1.0, retry_after=1.0)
    assert not b.allow(5.0) and b.allow(10.0)


def test_many_rate_limits_never_open() -> None:
    b = breaker()
    for i in range(1000):
        assert b.on_failure(F.RATE_LIMITED, float(i), retry_after=0.5) == []
    assert b.state is CLOSED


def test_busy_backs_off_without_tripping() -> None:
    b = breaker()
    for i in range(50):
        assert b.on_failure(F.BUSY, float(i)) == []
    assert b.state is CLOSED
    assert not b.allow(49.5) and b.allow(50.0)


# ---------------------------------------------------------------- connection and 5xx


def test_refused_trips_at_once() -> None:
    b = breaker()
    ts = b.on_failure(F.CONNECTION, 0.0, refused=True)
    assert ts == [Transition(F.CONNECTION, CLOSED, OPEN, "connection refused", about_replica=True)]
    assert not b.allow(0.0)


def test_unreachable_trips_at_once_as_evidence_about_the_path() -> None:
    """A connect that timed out costs a timeout per try: trip like refused, but do not blame
    the replica (another router may reach it fine)."""
    b = breaker()
    ts = b.on_failure(F.CONNECTION, 0.0, unreachable=True)
    assert ts == [Transition(F.CONNECTION, CLOSED, OPEN, "replica unreachable")]
    assert not ts[0].about_replica
    assert not b.allow(0.0)


def _trip_with(b: ReplicaBreaker, fc: F) -> list[Transition]:
    for i in range(10):
        ts = b.on_failure(fc, float(i) * 0.01)
        if ts:
            return ts
    raise AssertionError(f"{fc} never tripped")


@pytest.mark.parametrize(
    ("fc", "about"),
    [(F.GPU_OOM, True), (F.SERVER_ERROR, True), (F.TIMEOUT, False), (F.CONNECTION, False)],
)
def test_open_says_whether_the_evidence_is_about_the_replica(fc: F, about: bool) -> None:
    ts = _trip_with(breaker(), fc)
    assert states(ts) == [(CLOSED, OPEN)]
    assert ts[0].about_replica is about


@pytest.mark.parametrize(
    ("fc", "kw", "about"),
    [
        (F.SERVER_ERROR, {}, True),
        (F.CONNECTION, {"refused": True}, True),
        (F.TIMEOUT, {}, False),
        (F.CONNECTION, {"unreachable": True}, False),
        (F.CONNECTION, {}, False),
    ],
)
def test_failed_probe_reopens_with_its_evidence_class(
    fc: F, kw: dict[str, bool], about: bool
) -> None:
    b = breaker(open_base_s=1.0)
    trip(b, 0.0)
    assert b.allow(1.0)  # the probe
    ts = b.on_failure(fc, 1.0, **kw)
    assert states(ts) == [(OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]
    assert ts[-1].about_replica is about
    assert not ts[0].about_replica  # time-driven changes carry no evidence


@pytest.mark.parametrize("fc", [F.CONNECTION, F.SERVER_ERROR])
def test_reset_and_5xx_trip_after_five_in_a_row(fc: F) -> None:
    b = breaker()
    for i in range(4):
        assert b.on_failure(fc, float(i)) == []
    assert states(b.on_failure(fc, 4.0)) == [(CLOSED, OPEN)]


def test_resets_and_5xx_share_one_streak_broken_by_success() -> None:
    b = breaker()
    for i in range(4):
        b.on_failure(F.SERVER_ERROR if i % 2 else F.CONNECTION, float(i))
    b.on_success(4.0)
    for i in range(4):
        assert b.on_failure(F.SERVER_ERROR, 5.0 + i) == []
    assert b.state is CLOSED


# ---------------------------------------------------------------- open, half-open


def test_open_then_half_open_then_closed() -> None:
    b = breaker()
    trip(b, 0.0)
    assert not b.allow(4.99)
    assert b.weight_factor(4.99) == 0.0
    assert b.poll(4.99) == []
    assert b.allow(5.0)  # the single probe
    assert b.state is HALF_OPEN
    assert not b.allow(5.0)  # the probe slot is taken
    ts = b.on_success(6.0)
    assert ts == [
        Transition(None, OPEN, HALF_OPEN, "open period over"),
        Transition(None, HALF_OPEN, CLOSED, "probe succeeded"),
    ]
    assert b.allow(6.0)
    assert b.weight_factor(6.0) == 1.0  # not an OOM trip: no ramp


def test_poll_reports_half_open() -> None:
    b = breaker()
    trip(b, 0.0)
    assert states(b.poll(5.0)) == [(OPEN, HALF_OPEN)]
    assert b.poll(6.0) == []
    assert b.state is HALF_OPEN


def test_probe_failure_reopens_with_doubling_capped() -> None:
    b = breaker()
    trip(b, 0.0)
    now, expected = 0.0, [10.0, 20.0, 40.0, 60.0, 60.0]
    for period in [5.0, *expected]:
        now += period
        assert not b.allow(now - 0.01)
        assert b.allow(now)
        ts = b.on_failure(F.SERVER_ERROR, now)
        assert states(ts) == [(OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]
        assert ts[1].failure_class is F.SERVER_ERROR
    snap = b.snapshot(now)
    assert snap["open_until"] == now + 60.0


def test_close_resets_the_backoff() -> None:
    b = breaker()
    trip(b, 0.0)
    b.allow(5.0)
    b.on_failure(F.TIMEOUT, 5.0)  # reopen: 10 s
    b.allow(15.0)
    b.on_success(15.0)
    assert b.state is CLOSED
    trip(b, 20.0)
    assert not b.allow(24.9) and b.allow(25.0)  # base period again


def test_half_open_needs_configured_successes_and_probes() -> None:
    b = breaker(half_open_probes=2, half_open_successes=3)
    trip(b, 0.0)
    assert b.allow(5.0) and b.allow(5.0) and not b.allow(5.0)
    assert states(b.on_success(5.1)) == [(OPEN, HALF_OPEN)]
    assert b.allow(5.2) and not b.allow(5.2)
    assert b.on_success(5.3) == []
    assert states(b.on_success(5.4)) == [(HALF_OPEN, CLOSED)]


@pytest.mark.parametrize("fc", [F.CONTEXT_LENGTH, F.CLIENT_ERROR, F.RATE_LIMITED, F.BUSY])
def test_non_verdicts_free_the_probe_slot(fc: F) -> None:
    b = breaker()
    trip(b, 0.0)
    assert b.allow(5.0)
    b.on_failure(fc, 5.0, retry_after=0.0)
    assert b.state is HALF_OPEN
    assert b.allow(6.5)  # 503 backoff is 1 s


def test_release_probe() -> None:
    b = breaker()
    trip(b, 0.0)
    assert b.allow(5.0) and not b.allow(5.0)
    b.release_probe()
    assert b.allow(5.0)
    b.release_probe()
    b.release_probe()  # extra releases are harmless
    assert b.allow(5.0) and not b.allow(5.0)


def test_pause_applies_in_half_open() -> None:
    b = breaker()
    trip(b, 0.0)
    b.on_failure(F.RATE_LIMITED, 1.0, retry_after=10.0)
    assert not b.allow(6.0)
    assert b.allow(11.0)


def test_late_results_while_open_change_nothing() -> None:
    b = breaker()
    trip(b, 0.0)
    assert b.on_success(1.0) == []
    assert b.on_failure(F.SERVER_ERROR, 1.0) == []
    assert b.state is OPEN and not b.allow(4.9) and b.allow(5.0)


def test_late_results_in_half_open_without_probe_change_nothing() -> None:
    b = breaker()
    trip(b, 0.0)
    b.poll(5.0)
    assert b.on_success(5.0) == []
    assert b.on_failure(F.TIMEOUT, 5.0) == []
    assert b.state is HALF_OPEN


# ---------------------------------------------------------------- operator and peers


def test_reset_closes_and_forgets() -> None:
    b = breaker()
    b.on_failure(F.GPU_OOM, 0.0)
    b.on_failure(F.RATE_LIMITED, 0.0, retry_after=30.0)
    trip(b, 0.0)
    ts = b.reset(1.0)
    assert ts == [Transition(None, OPEN, CLOSED, "operator reset")]
    assert b.allow(1.0) and b.weight_factor(1.0) == 1.0
    assert b.reset(2.0) == []


def test_force_open_from_peer() -> None:
    b = breaker()
    ts = b.force_open(0.0, F.GPU_OOM, 12.0)
    # False: the peer's open was replicated already; it must not travel again.
    assert ts == [Transition(F.GPU_OOM, CLOSED, OPEN, "opened by peer", about_replica=False)]
    assert not b.allow(11.9) and b.allow(12.0)


def test_force_open_caps_extends_and_ignores_past() -> None:
    b = breaker()
    assert b.force_open(10.0, F.TIMEOUT, 5.0) == []
    assert b.state is CLOSED
    b.force_open(0.0, F.TIMEOUT, 1e9)
    assert b.snapshot(0.0)["open_until"] == 60.0
    assert b.force_open(1.0, F.TIMEOUT, 2.0) == []  # shorter: kept
    assert b.force_open(1.0, F.TIMEOUT, 61.0) == []  # longer: extended, no transition
    assert not b.allow(60.5) and b.allow(61.0)


def test_snapshot_fields() -> None:
    b = breaker()
    b.on_failure(F.TIMEOUT, 0.0)
    b.on_failure(F.BUSY, 0.0)
    snap = b.snapshot(0.5)
    assert snap["state"] == "closed"
    assert snap["last_failure_class"] == "busy"
    assert snap["backoff_until"] == 1.0 and snap["paused_until"] is None
    assert snap["consecutive_timeouts"] == 1
    trip(b, 1.0)
    assert b.snapshot(2.0)["state"] == "open"
    assert b.snapshot(6.0)["state"] == "half_open"  # effective, not yet recorded
    assert b.state is OPEN


@pytest.mark.parametrize(
    "kw",
    [
        {"oom_trip_count": 0},
        {"half_open_probes": 0},
        {"open_base_s": 0.0},
        {"open_base_s": 10.0, "open_max_s": 5.0},
        {"oom_weight_cut": 1.5},
        {"busy_backoff_s": -1.0},
        {"max_pause_s": float("inf")},
    ],
)
def test_config_rejects_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerConfig(**kw)  # type: ignore[arg-type]
