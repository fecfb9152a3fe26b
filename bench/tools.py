"""External tools of the benchmark: nginx (Debian's nginx-light) and wrk, installed if missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.harness import BenchError

APT_PACKAGES = ("nginx-light", "wrk")
APT_TIMEOUT_S = 300


@dataclass(frozen=True, slots=True)
class Tools:
    nginx: str
    wrk: str


def _find(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def ensure_tools(install: bool = True) -> Tools:
    """Find nginx and wrk; install both with apt-get (update once, then install) when missing."""
    nginx, wrk = _find("nginx"), _find("wrk")
    if (nginx is None or wrk is None) and install:
        if shutil.which("apt-get") is None:
            raise BenchError("nginx/wrk missing and apt-get not found: install nginx and wrk")
        if os.geteuid() != 0:
            raise BenchError("nginx/wrk missing; run as root or: apt-get install nginx-light wrk")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        print(f"bench: installing {' '.join(APT_PACKAGES)} with apt-get", flush=True)
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
        ):
            res = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
            )
            if res.returncode != 0:
                raise BenchError(f"{' '.join(argv)} failed:\n{res.stdout[-2000:]}{res.stderr}")
        nginx, wrk = _find("nginx"), _find("wrk")
    if nginx is None or wrk is None:
        raise BenchError(f"need nginx and wrk (found nginx={nginx}, wrk={wrk})")
    return Tools(nginx=nginx, wrk=wrk)


def version_of(argv: list[str]) -> str:
    """First line a ``--version``-like command prints on stdout or stderr."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (res.stdout + res.stderr).strip()
    return text.splitlines()[0] if text else "unknown"
