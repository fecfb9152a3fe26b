"""`make chaos`: the full chaos run in network namespaces; writes docs/chaos.md.

    python -m tests.chaos.run [--short] [--report docs/chaos.md]

Needs root, ``ip`` and ``nft``; exits 0 with a printed reason where they are missing, 1 when a
check failed. SIGTERM, SIGINT and SIGHUP tear the test bed down before exiting.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType

from hanode.devtools.netns import sweep_leftovers, unavailable_reason
from tests.chaos.scenarios import FULL, SHORT, run
from tests.chaos.suite import FaultResult


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def install_signal_cleanup() -> None:
    """Signals become SystemExit, so every ``finally`` (processes, namespaces) still runs."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_exit)


def report(results: list[FaultResult], leaks: list[str], seconds: float, mode: str) -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    passed = sum(r.passed for r in results)
    out = [
        "# Chaos run in network namespaces",
        "",
        f"`make chaos` ({mode} run), {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"commit {head}{' with uncommitted changes' if dirty else ''}; {seconds:.0f} s in all.",
        "",
        "Three nodes, each a `hanode run` and two simulators in its own network namespace "
        "(one bridge, a private /24), replicas configured on loopback with `[node] "
        "advertise_host`; clients in the root namespace with the official `openai` client "
        "(`max_retries=0`, 15 s timeout, non-streamed). Faults: nftables rules inside the "
        "namespaces (drops for partitions, `numgen random mod 100 < 10 drop` for loss), link "
        "down, signals, libfaketime. See `tests/chaos/` for how each number is measured.",
        "",
        f"**{passed} of {len(results)} faults passed every check.** Leaks after teardown: "
        f"{'; '.join(leaks) if leaks else 'none'}.",
        "",
        "| fault | result | time (s) | numbers |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        nums = "; ".join(f"{k}: {v}" for k, v in r.numbers.items())
        out.append(f"| {r.name} | {'pass' if r.passed else 'FAIL'} | {r.seconds:.0f} | {nums} |")
    for r in results:
        out += ["", f"## {r.name}: {'pass' if r.passed else 'FAIL'}", "", r.what + ".", ""]
        if r.error:
            out += [f"Stopped by an error: `{r.error}`", ""]
        for c in r.checks:
            detail = c.detail.replace("|", "/").replace("\n", " ")[:400]
            out.append(f"- {'pass' if c.passed else '**FAIL**'}: {c.name}. {detail}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run")
    parser.add_argument("--short", action="store_true", help="the few faults of make test")
    parser.add_argument("--report", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"chaos suite skipped: {reason}")
        return 0
    install_signal_cleanup()
    swept = sweep_leftovers()
    if swept:
        print(f"removed leftovers of an earlier run: {swept}")
    mode = "short" if args.short else "full"
    tmp = Path(tempfile.mkdtemp(prefix="hanode-chaos-"))
    results, leaks, seconds = run(SHORT if args.short else FULL, tmp)
    if all(r.passed for r in results) and not leaks:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"logs kept in {tmp}")
    text = report(results, leaks, seconds, mode)
    if args.report is not None:
        args.report.write_text(text)
        print(f"wrote {args.report}")
    failed = [r.name for r in results if not r.passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed ({seconds:.0f}s)")
    return 1 if failed or leaks else 0


if __name__ == "__main__":
    sys.exit(main())
