"""Which chaos faults run, in which order: the short set (in `make test`) and the full one
(`make chaos`), and the loop that runs them with their checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.chaos.faults_network import (
    advertise_refused,
    clock_skew,
    every_router_every_replica,
    loss,
    partition,
)
from tests.chaos.faults_process import (
    compaction_restart,
    full_restart,
    host_death,
    kill_restart_loop,
    leader_sigstop,
)
from tests.chaos.suite import (
    FaultResult,
    Suite,
    run_scenario,
)

# -- runs -----------------------------------------------------------------------------------------
Scenario = tuple[str, str, Callable[[Suite, FaultResult], None]]

SHORT: list[Scenario] = [
    ("refused without advertise_host", "same config, no [node] advertise_host", advertise_refused),
    ("every router, every replica", "loopback URLs + advertise_host", every_router_every_replica),
    (
        "host death",
        "a follower's link down, its processes SIGKILLed, under load; then back",
        host_death,
    ),
    ("leader SIGSTOP 5 s", "the leader's daemon frozen for 5 s", leader_sigstop),
    (
        "minority partition 10 s",
        "one follower cut off (nft drop both ways) for 10 s",
        lambda s, r: partition(s, r, isolate_leader=False, seconds=10.0),
    ),
]

FULL: list[Scenario] = [
    *SHORT[:3],
    (
        "leader isolated 20 s",
        "the leader cut off from the majority (nft drop) for 20 s",
        lambda s, r: partition(s, r, isolate_leader=True, seconds=20.0),
    ),
    SHORT[4],
    (
        "10% packet loss 20 s",
        "numgen random mod 100 < 10 drop, every namespace, both ways",
        lambda s, r: loss(s, r, seconds=20.0),
    ),
    SHORT[3],
    ("SIGKILL/restart loop", "n1's daemon SIGKILLed and restarted 3 times", kill_restart_loop),
    ("full cluster stop and start", "SIGTERM to every daemon, then start all", full_restart),
    (
        "restart after log compaction",
        "every log compacted, every daemon SIGKILLed, restarted",
        compaction_restart,
    ),
    ("clock 2 minutes ahead", "n3 under libfaketime +120 s (wall clock only)", clock_skew),
]


def run(
    scenarios: Sequence[Scenario], tmp: Path, log: Callable[[str], None] = print
) -> tuple[list[FaultResult], list[str], float]:
    """Start the bed, run the scenarios in order, tear everything down; (results, leaks, s)."""
    start = time.monotonic()
    suite = Suite(tmp)
    results: list[FaultResult] = []
    leaks: list[str] = []
    try:
        suite.start()
        log(f"test bed up: {suite.cluster.bed.tag} {suite.cluster.bed.subnet}")
        for name, what, fn in scenarios:
            res = run_scenario(name, what, fn, suite)
            results.append(res)
            log(f"{'PASS' if res.passed else 'FAIL'} {name} ({res.seconds:.0f}s) {res.error}")
            for c in res.checks:
                if not c.passed:
                    log(f"    failed: {c.name}: {c.detail[:300]}")
    finally:
        leaks = suite.close()
    return results, leaks, time.monotonic() - start
