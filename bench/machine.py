"""Facts about the machine a run was measured on, for the report's Machine table."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from bench.tools import version_of

REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _pkg(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_rev() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "hanode"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{rev}{' + uncommitted changes in hanode/' if dirty else ''}" if rev else "unknown"


def machine_info(nginx: str, wrk: str, py_spy: str) -> dict[str, str]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} online, {affinity} usable by this process",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": _pkg("uvloop"),
        "httptools": _pkg("httptools"),
        "nginx": version_of([nginx, "-v"]).replace("nginx version: ", ""),
        "wrk": version_of([wrk, "-v"]).split(" [")[0],
        "py-spy": version_of([py_spy, "--version"]),
        "hanode": _git_rev(),
    }
