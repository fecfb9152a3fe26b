"""Passive statistics: each try's own latency, slow failures counted as latency, quick ones not."""

from __future__ import annotations

from hanode.health.passive import SLOW_FAILURE_S, PassiveStats


def test_slow_failures_raise_latency_quick_ones_do_not() -> None:
    stats = PassiveStats(window_s=30.0)
    for i in range(3):
        stats.record("a", True, 0.2, 0.05, float(i))
    assert stats.latency_ms("a", 3.0)[:3] == (200.0, 50.0, None)
    for i in range(3):  # refused, instant 503: no news about speed
        stats.record("a", False, 0.001, None, 3.0 + i)
    assert stats.latency_ms("a", 6.0)[:3] == (200.0, 50.0, None)
    assert stats.failed_since("a", 2.0) and stats.last_success("a") == 2.0
    for i in range(4):  # tries that held their request for a minute before failing
        stats.record("a", False, 60.0, None, 6.0 + i)
    latency, ttft, _, _ = stats.latency_ms("a", 10.0)
    assert latency == 60_000.0 and ttft == 50.0  # TTFT only from answers that had one
    assert SLOW_FAILURE_S <= 10.0


def test_replicas_are_kept_apart() -> None:
    stats = PassiveStats(30.0)
    stats.record("dead", False, 60.0, None, 1.0)
    stats.record("alive", True, 0.1, 0.02, 1.0)
    assert stats.latency_ms("alive", 1.0)[:3] == (100.0, 20.0, None)
    assert not stats.failed_since("alive", 0.0)


def test_tpot_and_ttft_are_kept_apart_from_answers_without_them() -> None:
    """Non-streamed answers have a TPOT (from usage) but no TTFT; the medians skip gaps."""
    stats = PassiveStats(30.0)
    stats.record("a", True, 2.0, None, 1.0, tpot_s=0.005)
    stats.record("a", True, 0.1, 0.02, 2.0, tpot_s=0.007)
    stats.record("a", True, 0.1, 0.04, 3.0)
    got = stats.latency_ms("a", 3.0)
    assert got.latency_ms == 100.0
    assert got.ttft_ms == 30.0
    assert got.tpot_ms == 6.0


def test_figures_past_the_window_are_kept_but_marked_stale() -> None:
    stats = PassiveStats(30.0)
    stats.record("a", True, 0.1, 0.02, 1.0, tpot_s=0.005)
    assert stats.latency_ms("a", 2.0).recent
    old = stats.latency_ms("a", 100.0)
    assert old[:3] == (100.0, 20.0, 5.0) and not old.recent
    assert not stats.latency_ms("never", 1.0).recent
