"""`systemd-analyze verify` on the shipped units (issue 14).

systemd-analyze also checks that each ExecStart program exists, and /opt/hanode is not
installed here: each unit is verified as a copy whose ExecStart program is this checkout's
(the rest of the unit byte for byte). Skipped, with the reason, where systemd-analyze is
missing (`apt-get install systemd`; `make test` installs it as root, like chaos-deps).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[3] / "systemd"
ANALYZE = shutil.which("systemd-analyze")
_EXEC = re.compile(r"^(ExecStart=)(\S+)", re.MULTILINE)


def _units() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


@pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)
@pytest.mark.parametrize("unit", _units(), ids=lambda p: p.name)
def test_units_verify(unit: Path, tmp_path: Path) -> None:
    text = unit.read_text()
    assert _EXEC.search(text), f"{unit.name} has no ExecStart"
    copy = tmp_path / unit.name
    copy.write_text(_EXEC.sub(lambda m: m.group(1) + sys.executable, text))
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "verify", str(copy)], capture_output=True, text=True, timeout=120
    )
    # Warnings (unknown keys, bad values) go to stderr even when the exit status is 0.
    problems = [line for line in done.stderr.splitlines() if unit.name in line or "Unknown" in line]
    assert done.returncode == 0 and not problems, done.stderr


def test_the_daemon_unit_is_notify_with_a_watchdog() -> None:
    text = (UNITS / "hanode.service").read_text()
    keys = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    assert keys["Type"] == "notify" and keys["NotifyAccess"] == "main"
    assert keys["WatchdogSec"].endswith("s") and keys["Restart"] == "on-failure"
    stop = int(keys["TimeoutStopSec"].rstrip("s"))
    assert stop > 30  # above the default [router].drain_timeout_s
