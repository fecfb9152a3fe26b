"""RouterCore.choose with the real breakers and picker (exclusion, half-open probes, the probe
slot leak), which breaker opens go to the cluster, and when a replica's tries are failed over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import pytest

from hanode.metrics.registry import NodeMetrics
from hanode.policies.breaker import BreakerConfig, BreakerState
from hanode.policies.failure import FailureClass as F
from hanode.pool.replica import AdminState, HealthLevel, Role
from hanode.router.core import RouterCore, RouterSettings, no_longer_serving
from tests.unit.router.fakes import MODEL, FakeView, state

T = TypeVar("T")


def run(body: Callable[[RouterCore, FakeView, float], T], **breaker: float) -> T:
    """Run ``body(core, view, now)`` on a loop, with replicas a, b, c (no traffic is sent)."""

    async def main() -> T:
        view = FakeView()
        view.publish(*(state(n, 1 + i) for i, n in enumerate("abc")))
        cfg = BreakerConfig(open_base_s=1.0, **breaker)  # type: ignore[arg-type]
        core = RouterCore(view, RouterSettings(breaker=cfg), NodeMetrics())
        core._rand = lambda: 0.0  # the picker's two draws both land on the first name
        try:
            return body(core, view, core.loop.time())
        finally:
            core.close()

    return asyncio.run(main())


def half_open(core: RouterCore, name: str, now: float) -> None:
    """Trip ``name`` long enough ago that its open period is over."""
    b = core.breaker(name)
    core.breaker_changed(name, b.on_failure(F.CONNECTION, now - 100.0, refused=True))
    assert b.snapshot(now)["state"] == "half_open"


def test_choose_follows_the_picker_and_skips_open_breakers() -> None:
    def body(core: RouterCore, view: FakeView, now: float) -> None:
        assert core.choose(MODEL, now, exclude=None) == "a"
        assert core.choose(MODEL, now, exclude="a") == "b"
        core.breaker_changed("a", core.breaker("a").on_failure(F.CONNECTION, now, refused=True))
        assert core.choose(MODEL, now, exclude=None) == "b"

    run(body)


def test_choose_returns_the_excluded_replica_only_when_nothing_else_may_serve() -> None:
    def body(core: RouterCore, view: FakeView, now: float) -> None:
        for name in "bc":
            b = core.breaker(name)
            core.breaker_changed(name, b.on_failure(F.CONNECTION, now, refused=True))
        assert core.choose(MODEL, now, exclude="a") == "a"
        core.breaker_changed("a", core.breaker("a").on_failure(F.CONNECTION, now, refused=True))
        assert core.choose(MODEL, now, exclude="a") is None
        assert core.choose(MODEL, now, exclude=None) is None

    run(body)


def test_a_half_open_replica_takes_one_probe_at_a_time() -> None:
    def body(core: RouterCore, view: FakeView, now: float) -> None:
        view.publish(state("a", 1))
        half_open(core, "a", now)
        assert core.choose(MODEL, now, exclude=None) == "a"  # the probe
        assert core.choose(MODEL, now, exclude=None) is None  # its slot is taken
        core.breaker("a").release_probe()
        assert core.choose(MODEL, now, exclude=None) == "a"

    run(body)


def test_fallback_does_not_leak_half_open_probe_slots() -> None:
    """Regression (issue 8, point 6): the picker keeps landing on a replica whose probe is in
    flight, so choose falls back to scanning the others. It used to call allow() on every one
    of them: each half-open breaker handed out its probe slot, one request was sent, and the
    other replicas stayed half-open refusing for ever."""

    def body(core: RouterCore, view: FakeView, now: float) -> None:
        for name in "abc":
            half_open(core, name, now)
        assert core.choose(MODEL, now, exclude=None) == "a"  # a's probe is now in flight
        chosen = core.choose(MODEL, now, exclude=None)  # a refuses three times: fallback
        assert chosen == "b"
        # The probes of a and b succeed; c was never sent anything and owes nothing.
        for name in "ab":
            core.breaker(name).on_success(now)
            assert core.breaker(name).state is BreakerState.CLOSED
        c = core.breaker("c")
        assert c.snapshot(now)["probes_in_flight"] == 0
        assert c.allow(now + 3600.0), "c still refuses: its probe slot leaked"

    run(body)


def test_only_opens_about_the_replica_go_to_the_cluster() -> None:
    def body(core: RouterCore, view: FakeView, now: float) -> None:
        sent: list[tuple[str, str, float]] = []
        core.listen_breaker_opens(lambda r, cls, until: sent.append((r, cls, until)))
        a, b, c = (core.breaker(n) for n in "abc")
        core.breaker_changed("a", a.on_failure(F.CONNECTION, now, refused=True))
        core.breaker_changed("b", b.on_failure(F.CONNECTION, now, unreachable=True))
        for _ in range(3):
            core.breaker_changed("c", c.on_failure(F.TIMEOUT, now))
        assert c.state is BreakerState.OPEN and b.state is BreakerState.OPEN
        assert [(r, cls) for r, cls, _ in sent] == [("a", "connection")]
        assert sent[0][2] == pytest.approx(now + 1.0)  # monotonic, as the cluster expects
        # A peer's open is applied but never sent back.
        core.breaker_changed("b", b.force_open(now, F.GPU_OOM, now + 5.0), local=False)
        core.breaker_changed("c", core.breaker("c").reset(now), local=False)
        core.breaker_changed("c", c.force_open(now, F.GPU_OOM, now + 5.0), local=False)
        assert len(sent) == 1

    run(body)


def test_gpu_oom_open_goes_to_the_cluster() -> None:
    def body(core: RouterCore, view: FakeView, now: float) -> None:
        sent: list[str] = []
        core.listen_breaker_opens(lambda r, cls, until: sent.append(cls))
        a = core.breaker("a")
        for i in range(3):
            core.breaker_changed("a", a.on_failure(F.GPU_OOM, now + i * 0.1))
        assert sent == ["gpu_oom"]

    run(body, oom_trip_count=3)


@pytest.mark.parametrize(
    ("kw", "dead"),
    [
        ({}, False),
        ({"level": HealthLevel.DEGRADED, "weight": 0.2}, False),
        ({"level": HealthLevel.DOWN}, True),
        ({"level": HealthLevel.UNREADY}, True),
        ({"weight": 0.0}, True),  # e.g. its node was lost
        ({"admin": AdminState.DRAINED}, False),  # an operator's drain lets work finish
        ({"role": Role.STANDBY}, False),
        ({"gpu_removed": True}, False),  # no new traffic, but what runs may finish
    ],
)
def test_which_replicas_are_no_longer_fit_to_finish_their_tries(
    kw: dict[str, object], dead: bool
) -> None:
    s = state("a", 1, **kw)  # type: ignore[arg-type]
    assert (no_longer_serving(s) is not None) is dead
    assert no_longer_serving(None) is not None
