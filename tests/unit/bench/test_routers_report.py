"""The LLM-router report (bench/routers_report.py): ratios, verdicts and tables from numbers."""

from __future__ import annotations

from collections import Counter

import pytest

from bench import routers
from bench.failover_targets import TargetFailover
from bench.harness import failure_line
from bench.overhead import TargetResult
from bench.proxy_limited import CANNED, LimitedResult
from bench.routers import RoutersResult
from bench.routers_report import (
    failover_table,
    limited_table,
    method,
    ratio,
    ratio_verdict,
    render,
    targets_table,
    verdicts,
)
from bench.stream_relay import RelayResult
from bench.targets import Extras
from bench.wrk import WrkResult


def wrk_result(rps: float, seconds: float = 3.0, p50_us: float = 500.0) -> WrkResult:
    return WrkResult(int(rps * seconds), seconds, rps, {50: p50_us, 99: 3 * p50_us}, {}, "")


def target(name: str, rps: float, cpu_ms: float) -> TargetResult:
    t = TargetResult(name, 0, c1=wrk_result(2000.0), c64=wrk_result(rps))
    t.cpu_s = cpu_ms * t.c64.requests / 1e3 if t.c64 else None
    return t


def relay(name: str, us_per_chunk: float, chunks: int = 12_928, streams: int = 64) -> RelayResult:
    return RelayResult(
        name,
        streams=streams,
        outcomes=Counter(ok=streams),
        chunks=chunks,
        wall_s=0.5,
        cpu_s=us_per_chunk * chunks / 1e6,
        path_s=0.9,
        concurrency=64,
    )


def limited(rps: dict[str, float]) -> LimitedResult:
    lim = LimitedResult()
    for name, value in rps.items():
        lim.runs[name] = wrk_result(value)
        lim.cpu_s[name] = 0.1 * lim.runs[name].requests / 1e3
    lim.workers_seen = {"hanode": 0, "hanode-w2": 2}
    return lim


def run_with(hanode_cpu: float, auto_rps: float, w2_rps: float) -> tuple[dict, RoutersResult]:
    targets = {
        "direct": target("direct", 7000, 0.12),
        "nginx": target("nginx", 9000, 0.04),
        "vllm-router": target("vllm-router", 5000, 0.16),
        "hanode": target("hanode", 4000, hanode_cpu),
        "hanode-auto": target("hanode-auto", auto_rps, 0.15),
    }
    rr = RoutersResult(Extras())
    rr.relay = {"vllm-router": relay("vllm-router", 17.0), "hanode": relay("hanode", 12.0)}
    rr.limited = limited({CANNED: 40000, "nginx": 14000, "hanode": 3000, "hanode-w2": w2_rps})
    return targets, rr


def test_ratio_is_none_when_a_side_is_missing_or_zero() -> None:
    assert ratio(1.0, 2.0) == 0.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(float("nan"), 1.0) is None


@pytest.mark.parametrize(
    ("mine", "theirs", "at_most", "word"),
    [(0.1, 0.2, True, "PASS"), (0.19, 0.2, True, "MISS"), (6.0, 5.0, False, "PASS"),
     (4.0, 5.0, False, "MISS"), (None, 5.0, False, "n/a")],
)  # fmt: skip
def test_ratio_verdict(mine: float | None, theirs: float, at_most: bool, word: str) -> None:
    v = ratio_verdict("x", mine, theirs, 0.8 if at_most else 1.0, at_most, "inputs", "absent")
    assert v.word == word
    if word == "n/a":
        assert "absent" in v.measured


def test_the_four_verdicts_follow_the_measured_ratios() -> None:
    targets, rr = run_with(hanode_cpu=0.12, auto_rps=5200, w2_rps=5400)
    words = [v.word for v in verdicts(targets, rr)]
    # CPU/request 0.12/0.16 = 0.75; CPU/chunk 12/17 = 0.71; auto 5200/5000; 5400/3000 = 1.8
    assert words == ["PASS", "PASS", "PASS", "PASS"]
    targets, rr = run_with(hanode_cpu=0.14, auto_rps=4000, w2_rps=3300)
    assert [v.word for v in verdicts(targets, rr)] == ["MISS", "PASS", "MISS", "MISS"]


def test_a_missing_router_gives_n_a_with_its_reason() -> None:
    targets, rr = run_with(0.12, 5200, 5400)
    del targets["vllm-router"]
    rr.relay.pop("vllm-router")
    rr.skipped["vllm-router"] = "pip install vllm-router==0.1.17 failed (rc 1): no network"
    vs = verdicts(targets, rr)
    assert [v.word for v in vs[:3]] == ["n/a", "n/a", "n/a"]
    assert "no network" in vs[0].measured
    assert "no network" in render(targets, rr)


def test_tables_carry_every_target_and_the_ratios() -> None:
    targets, rr = run_with(0.12, 5200, 5400)
    table = targets_table(targets, rr)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    assert list(rows) == ["direct (simulator, no proxy)", "nginx", "vllm-router", "hanode",
                          "hanode-auto"]  # fmt: skip
    assert "0.75x" in rows["hanode"]  # CPU per request vs vllm-router
    assert "3.00x" in rows["hanode"]  # vs nginx (0.12 / 0.04)
    assert "0.71x" in rows["hanode"]  # CPU per chunk vs vllm-router
    assert "64/64" in rows["hanode"]
    lim = limited_table(rr.limited)  # type: ignore[arg-type]
    assert "node + 2 workers" in lim and "the floor" in lim
    assert "0.39x" in lim  # hanode-w2 5400 / nginx 14000


def test_failover_table_counts_errors_and_truncations() -> None:
    f = TargetFailover("vllm-router")
    f.requests.update(ok=90, **{"HTTP 502": 2})
    f.streams.update(ok=30, truncated=3)
    f.late_errors = 1
    broken = TargetFailover("litellm", error="did not start: exited")
    text = failover_table({"vllm-router": f, "litellm": broken})
    row = next(line for line in text.splitlines() if line.startswith("| vllm-router"))
    assert "| 90/92 | 2 | 30/33 | 3 | 0 | 1 |" in row
    assert "HTTP 502 x2, truncated x3" in row
    assert "not run: did not start" in text


def test_the_method_text_states_the_settings_of_the_run() -> None:
    text = method(RoutersResult(Extras(), routers.QUICK))
    assert "2 per connection and round, 1 rounds" in text
    assert "64 streams ask for 32,000 chunks a second" in text
    assert "SIGKILLed 1.3 s into 4 s" in text


def test_a_target_that_did_not_start_is_named_with_its_last_words() -> None:
    exc = RuntimeError(
        "node exited; cmd=['python', '-m', 'hanode', 'run'] rc=2\n--- output ---\n"
        "/tmp/x/hanode-w2.toml: [router].workers: must be >= 1 or 'auto', got 0\n"
    )
    assert failure_line(exc) == (
        "node exited: /tmp/x/hanode-w2.toml: [router].workers: must be >= 1 or 'auto', got 0"
    )
    assert failure_line(TimeoutError()) == "TimeoutError"
