"""The breaker under random sequences of results (hypothesis): the state machine stays within
its bounds, and request faults and 429s never change what it lets through."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

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


# ---------------------------------------------------------------- random sequences

COUNTED = (F.GPU_OOM, F.TIMEOUT, F.CONNECTION, F.SERVER_ERROR)


class BreakerMachine(RuleBasedStateMachine):
    """Drive one breaker with random results, times and operator actions; check invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = BreakerConfig(half_open_probes=2, half_open_successes=2, open_max_s=40.0)
        self.b = ReplicaBreaker(self.cfg)
        self.now = 0.0
        self.admitted = 0  # probes we hold, by our own count

    def _apply(self, ts: list[Transition]) -> None:
        for t in ts:
            assert t.from_state is not t.to_state
            if t.about_replica:
                assert t.to_state is OPEN
                assert t.failure_class in (F.GPU_OOM, F.SERVER_ERROR, F.CONNECTION)
            if t.to_state is OPEN:
                assert t.failure_class in COUNTED
                until = self.b.snapshot(self.now)["open_until"]
                assert isinstance(until, float)
                assert until - self.now <= self.cfg.open_max_s + EPS
            if t.from_state is HALF_OPEN or t.to_state is not HALF_OPEN:
                self.admitted = 0
        if self.b.state is not HALF_OPEN:
            self.admitted = 0

    @rule(dt=st.floats(0.0, 30.0))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule()
    def refused(self) -> None:  # the quickest way to OPEN, so that probing gets exercised
        self._apply(self.b.on_failure(F.CONNECTION, self.now, refused=True))

    @rule()
    def wait_out_open(self) -> None:
        until = self.b.snapshot(self.now)["open_until"]
        if isinstance(until, float):
            self.now = max(self.now, until)

    @rule()
    def allow(self) -> None:
        before = self.b.state
        open_until = self.b.snapshot(self.now)["open_until"]
        ok = self.b.allow(self.now)
        if before is OPEN and open_until is not None:
            assert isinstance(open_until, float)
            assert not ok or self.now >= open_until  # OPEN never allows
        if ok and self.b.state is HALF_OPEN:
            self.admitted += 1
            assert self.admitted <= self.cfg.half_open_probes

    @rule()
    def success(self) -> None:
        if self.b.state is HALF_OPEN and self.admitted:
            self.admitted -= 1
        self._apply(self.b.on_success(self.now))

    @rule(
        fc=st.sampled_from(list(F)),
        refused=st.booleans(),
        unreachable=st.booleans(),
        retry_after=st.none() | st.floats(-10.0, 1e6) | st.just(float("nan")),
    )
    def failure(self, fc: F, refused: bool, unreachable: bool, retry_after: float | None) -> None:
        before = self.b.state
        if before is HALF_OPEN and self.admitted:
            self.admitted -= 1
        ts = self.b.on_failure(
            fc, self.now, refused=refused, unreachable=unreachable, retry_after=retry_after
        )
        if fc in (F.CONTEXT_LENGTH, F.CLIENT_ERROR, F.RATE_LIMITED, F.BUSY):
            assert all(t.to_state is not OPEN for t in ts)
            assert self.b.state is before or (before, self.b.state) == (OPEN, HALF_OPEN)
        self._apply(ts)

    @precondition(lambda self: self.admitted > 0)
    @rule()
    def release(self) -> None:
        self.admitted -= 1
        self.b.release_probe()

    @rule()
    def poll(self) -> None:
        self._apply(self.b.poll(self.now))

    @rule()
    def reset(self) -> None:
        self._apply(self.b.reset(self.now))
        assert self.b.state is CLOSED

    @rule(fc=st.sampled_from(COUNTED), ahead=st.floats(-5.0, 1000.0))
    def force_open(self, fc: F, ahead: float) -> None:
        self._apply(self.b.force_open(self.now, fc, self.now + ahead))

    @invariant()
    def weight_in_range(self) -> None:
        w = self.b.weight_factor(self.now)
        assert 0.0 <= w <= 1.0
        if self.b.snapshot(self.now)["state"] == "open":
            assert w == 0.0

    @invariant()
    def open_period_bounded(self) -> None:
        until = self.b.snapshot(self.now)["open_until"]
        if until is not None:
            assert isinstance(until, float)
            assert until - self.now <= self.cfg.open_max_s + EPS

    @invariant()
    def probes_bounded(self) -> None:
        probes = self.b.snapshot(self.now)["probes_in_flight"]
        assert isinstance(probes, int)
        assert 0 <= probes <= self.cfg.half_open_probes
        assert probes == (self.admitted if self.b.state is HALF_OPEN else 0)


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase


# Events for plain random sequences: (kind, failure class, refused, retry_after, dt).
EVENT = st.tuples(
    st.sampled_from(["ok", "fail", "allow", "release", "poll"]),
    st.sampled_from(list(F)),
    st.booleans(),
    st.none() | st.floats(0.0, 100.0),
    st.floats(0.0, 20.0),
)


def run(b: ReplicaBreaker, events: list[tuple[str, F, bool, float | None, float]]) -> float:
    now = 0.0
    for kind, fc, refused, retry_after, dt in events:
        now += dt
        if kind == "ok":
            b.on_success(now)
        elif kind == "fail":
            b.on_failure(fc, now, refused=refused, retry_after=retry_after)
        elif kind == "allow":
            b.allow(now)
        elif kind == "release":
            b.release_probe()
        else:
            b.poll(now)
    return now


@settings(max_examples=300, deadline=None)
@given(
    st.lists(EVENT, max_size=40),
    st.sampled_from([F.CONTEXT_LENGTH, F.CLIENT_ERROR]),
)
def test_request_faults_never_change_state(
    events: list[tuple[str, F, bool, float | None, float]], fc: F
) -> None:
    b = breaker()
    now = run(b, events)
    b.poll(now)  # flush a transition allow() may have held back (open period over)
    before = (b.state, b.snapshot(now))
    assert b.on_failure(fc, now) == []
    after = (b.state, b.snapshot(now))
    # Only a probe slot may be freed; nothing else moves.
    before[1].pop("probes_in_flight")
    after[1].pop("probes_in_flight")
    assert before == after


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENT, max_size=40), st.none() | st.floats(-1.0, 1e9))
def test_rate_limited_never_opens_or_changes_state(
    events: list[tuple[str, F, bool, float | None, float]], retry_after: float | None
) -> None:
    b = breaker()
    now = run(b, events)
    state = b.state
    ts = b.on_failure(F.RATE_LIMITED, now, retry_after=retry_after)
    assert all(t.to_state is not OPEN for t in ts)
    assert b.state is state or (state, b.state) == (OPEN, HALF_OPEN)
    paused = b.snapshot(now)["paused_until"]
    assert paused is None or (isinstance(paused, float) and paused - now <= 60.0 + EPS)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENT, max_size=60))
def test_random_sequences_keep_bounds(
    events: list[tuple[str, F, bool, float | None, float]],
) -> None:
    cfg = BreakerConfig()
    b = ReplicaBreaker(cfg)
    now = 0.0
    for kind, fc, refused, retry_after, dt in events:
        now += dt
        if kind == "allow":
            was_open = b.snapshot(now)["state"] == "open"
            assert not (b.allow(now) and was_open)
        elif kind == "fail":
            b.on_failure(fc, now, refused=refused, retry_after=retry_after)
        elif kind == "ok":
            b.on_success(now)
        assert 0.0 <= b.weight_factor(now) <= 1.0
        until = b.snapshot(now)["open_until"]
        assert until is None or (isinstance(until, float) and until - now <= cfg.open_max_s + EPS)
