"""End-to-end failure handling, replica faults: real ``hanode sim`` replicas behind one real
``hanode run`` node: a killed replica, a hanging one, OOMs, 429s with Retry-After. Clients use
the official ``openai`` SDK with its own retries off, so every retry seen here is hanode's.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import metric_sum
from tests.e2e.failure_support import FAST_SIM, MODEL, chat, cluster
from tests.support.procs import (
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


# -- 1. a killed replica ---------------------------------------------------------------------
def test_sigkill_under_steady_traffic_costs_no_request(tmp_path: Path) -> None:
    with cluster(tmp_path, 3) as c:
        stop = threading.Event()
        errors: list[str] = []
        served: list[int] = []
        lock = threading.Lock()

        def worker(k: int) -> None:
            with c.client(timeout=10.0) as client:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        reply = chat(client, f"worker {k} request {i}")
                        ok = bool(reply.choices[0].message.content)
                    except Exception as exc:
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    with lock:
                        served.append(k) if ok else errors.append("empty answer")

        threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        try:
            # steady traffic first, then the kill, then traffic well after it
            wait_until(lambda: len(served) >= 40, timeout=15.0, message="steady traffic")
            before_kill = len(served)
            victim = c.sims[1]
            victim.kill(signal.SIGKILL)
            victim.wait_exit(5.0)
            time.sleep(1.0)
            wait_until(
                lambda: len(served) >= before_kill + 40, timeout=15.0, message="traffic after kill"
            )
        finally:
            stop.set()
        for t in threads:
            t.join(15.0)
        assert not any(t.is_alive() for t in threads), "client threads did not stop"
        assert errors == [], f"{len(errors)} client errors, e.g. {errors[:3]}"
        doc = c.node.wait_health({"r1": "down"}, timeout=10.0)
        by_name = {r["name"]: r for r in doc["replicas"]}
        assert by_name["r1"]["weight"] == 0
        assert by_name["r0"]["health"] == "healthy" and by_name["r2"]["health"] == "healthy"
        metrics = c.metrics()
        assert metric_sum(metrics, "hanode_upstream_failures_total", replica="r1") >= 1


# -- 2. a hanging replica ----------------------------------------------------------------------
def test_hanging_replica_is_cut_by_per_try_timeout_and_breaker_opens(tmp_path: Path) -> None:
    per_try = 0.5
    sections = {
        "retry": {"per_try_timeout_s": per_try},
        "breaker": {"timeout_trip_count": 2, "open_base_s": 30.0, "open_max_s": 60.0},
        # keep health out of it: the breaker, not the L2 probe, must take the replica out
        "health": {"fall": 50, "l2_timeout_s": 5.0},
    }
    with cluster(tmp_path, 2, sections=sections) as c:
        c.sims[1].admin("faults", {"hang": 1.0})
        slow = 0
        with c.client(timeout=10.0) as client:
            for i in range(40):
                t0 = time.monotonic()
                reply = chat(client, f"hang test {i}")
                took = time.monotonic() - t0
                assert reply.choices[0].message.content
                # at most one per-try timeout, then a fast answer from the healthy replica
                assert took < 2 * per_try, f"request {i} took {took:.2f}s"
                if took >= per_try * 0.9:
                    slow += 1
                if c.replica("r1")["breaker"]["state"] != "closed":
                    break
        breaker = c.replica("r1")["breaker"]
        assert breaker["state"] in ("open", "half_open"), breaker
        assert breaker["last_failure_class"] == "timeout"
        assert slow == 2, f"{slow} requests waited for the per-try timeout, expected 2"
        metrics = c.metrics()
        assert (
            metric_sum(
                metrics, "hanode_upstream_failures_total", replica="r1", failure_class="timeout"
            )
            == 2
        )
        assert (
            metric_sum(
                metrics,
                "hanode_breaker_transitions_total",
                replica="r1",
                failure_class="timeout",
                to_state="open",
            )
            == 1
        )
        assert metric_sum(metrics, "hanode_upstream_failures_total", replica="r0") == 0
        # while open, the hanging replica gets nothing: every request is fast
        with c.client(timeout=10.0) as client:
            for i in range(5):
                t0 = time.monotonic()
                chat(client, f"after open {i}")
                assert time.monotonic() - t0 < per_try * 0.9


# -- 3. repeated OOMs ----------------------------------------------------------------------------
def test_repeated_oom_cuts_weight_then_trips_breaker(tmp_path: Path) -> None:
    trip = 3
    sections = {
        "breaker": {"oom_trip_count": trip, "oom_window_s": 30.0, "open_base_s": 30.0},
        "health": {"fall": 50},
    }
    with cluster(tmp_path, 2, sections=sections) as c:
        c.sims[1].admin("faults", {"oom": 1.0})
        factor_after_first: float | None = None
        opened_after: float | None = None
        with c.client() as client:
            for i in range(300):
                reply = chat(client, f"oom test {i}")
                assert reply.choices[0].message.content
                assert reply.model == MODEL
                r1 = c.replica("r1")
                ooms = metric_sum(
                    c.metrics(),
                    "hanode_upstream_failures_total",
                    replica="r1",
                    failure_class="gpu_oom",
                )
                if ooms >= 1 and factor_after_first is None:
                    factor_after_first = r1["breaker"]["weight_factor"]
                if r1["breaker"]["state"] != "closed":
                    opened_after = ooms
                    break
                assert ooms < trip, f"breaker still closed after {ooms:g} OOMs"
        assert opened_after == trip, f"breaker opened after {opened_after} OOMs, want {trip}"
        # the first OOM cut the replica's weight before any trip
        assert factor_after_first is not None and factor_after_first < 1.0
        r1 = c.replica("r1")
        assert r1["breaker"]["state"] == "open"
        assert r1["breaker"]["last_failure_class"] == "gpu_oom"
        metrics = c.metrics()
        assert (
            metric_sum(
                metrics,
                "hanode_breaker_transitions_total",
                replica="r1",
                failure_class="gpu_oom",
                to_state="open",
            )
            == 1
        )
        assert metric_sum(metrics, "hanode_retries_total", failure_class="gpu_oom") == trip
        assert metric_sum(metrics, "hanode_breaker_transitions_total", replica="r0") == 0
        # while open the OOM replica gets nothing, so nothing is retried any more
        before = c.chat_counts()
        with c.client() as client:
            for i in range(20):
                assert chat(client, f"while open {i}").choices[0].message.content
        assert c.chat_counts() == [before[0] + 20, before[1]]
        assert metric_sum(c.metrics(), "hanode_retries_total") == trip


# -- 4. 429 with Retry-After -------------------------------------------------------------------
def test_rate_limit_pauses_for_retry_after_and_resumes(tmp_path: Path) -> None:
    sim_args = (*FAST_SIM, "--retry-after-s", "1")
    with cluster(tmp_path, 1, sim_args=sim_args) as c:
        sim = c.sims[0]
        states: list[tuple[str, str]] = []

        def watch() -> None:
            r = c.replica("r0")
            states.append((r["health"], r["breaker"]["state"]))

        sim.admin("faults", {"ratelimit": 1.0})
        with c.client() as client:
            with pytest.raises(openai.RateLimitError) as info:
                chat(client, "rate limited")
            t_429 = time.monotonic()
            assert info.value.status_code == 429
            assert info.value.response.headers.get("retry-after") == "1"
            watch()
            sim.admin("faults", {"clear": True})
            tries_at_429 = c.chat_counts()[0]
            resumed_at: float | None = None
            paused_answers = 0
            deadline = t_429 + 5.0
            while time.monotonic() < deadline:
                try:
                    reply = chat(client, "after the pause")
                except openai.RateLimitError as exc:
                    # paused: refused at the door with the wait left, replica untouched
                    assert exc.code == "rate_limit_exceeded", exc.body
                    assert exc.response.headers.get("retry-after") == "1", exc.response.headers
                    paused_answers += 1
                    watch()
                    time.sleep(0.05)
                    continue
                assert reply.choices[0].message.content
                resumed_at = time.monotonic()
                break
        assert resumed_at is not None, "traffic did not resume after the Retry-After pause"
        assert paused_answers >= 5, f"only {paused_answers} answers during the pause"
        waited = resumed_at - t_429
        assert 0.8 <= waited <= 2.0, f"resumed after {waited:.2f}s, Retry-After was 1s"
        # during the pause the replica saw nothing; after it, exactly the one that succeeded
        assert c.chat_counts()[0] == tries_at_429 + 1
        watch()
        assert all(h == "healthy" for h, _ in states), states
        assert all(b != "open" for _, b in states), states
        metrics = c.metrics()
        assert metric_sum(metrics, "hanode_breaker_transitions_total", replica="r0") == 0
        assert (
            metric_sum(
                metrics,
                "hanode_upstream_failures_total",
                replica="r0",
                failure_class="rate_limited",
            )
            == 1
        )
