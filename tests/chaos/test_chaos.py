"""The short chaos run (a few faults, under 5 minutes) inside `make test`.

Runs where root, ``ip netns`` and ``nft`` are available; skipped with the reason elsewhere.
One test bed for the module; one test per fault, each asserting every check of that fault.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from hanode.devtools.netns import sweep_leftovers, unavailable_reason
from tests.chaos.scenarios import SHORT
from tests.chaos.suite import Suite, run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REASON = unavailable_reason()
if REASON is not None:
    print(f"chaos suite skipped: {REASON}")
    pytest.skip(f"chaos suite skipped: {REASON}", allow_module_level=True)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    sweep_leftovers()
    previous = signal.signal(signal.SIGTERM, _raise_exit)  # teardown runs on SIGTERM too
    s = Suite(Path(tmp_path_factory.mktemp("chaos")))
    try:
        s.start()
        yield s
    finally:
        leaks = s.close()
        signal.signal(signal.SIGTERM, previous)
        assert not leaks, f"left behind: {leaks}"


@pytest.mark.parametrize("scenario", SHORT, ids=[name for name, _, _ in SHORT])
def test_fault(suite: Suite, scenario: tuple[str, str, object]) -> None:
    name, what, fn = SHORT[[s[0] for s in SHORT].index(scenario[0])]
    res = run_scenario(name, what, fn, suite)
    lines = [f"{'ok  ' if c.passed else 'FAIL'} {c.name}: {c.detail[:300]}" for c in res.checks]
    print(f"{name} ({res.seconds:.0f}s) {res.numbers}\n" + "\n".join(lines))
    assert not res.error, res.error
    failed = [f"{c.name}: {c.detail[:300]}" for c in res.checks if not c.passed]
    assert not failed, "\n".join(failed)
