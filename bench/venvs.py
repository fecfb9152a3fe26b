"""The LLM routers of the benchmark, each in its own cached virtual environment.

vllm-router (PyPI ``vllm-router``, the Rust router of vllm-project/router) and LiteLLM's proxy
(``litellm[proxy]``) are installed with pip into ``~/.cache/hanode/bench/<name>/``, created with
the project's own Python, never into the project's environment or dependencies. A venv whose
stamp names the pinned requirement is reused as it is; an install that fails (no network, no
wheel for this platform) gives a :class:`Skip` whose reason the report prints, never a crash.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hanode" / "bench"
PIP_TIMEOUT_S = 900


@dataclass(frozen=True, slots=True)
class Spec:
    name: str  # venv directory and target family
    requirement: str  # what pip installs (pinned, so runs stay comparable)
    distribution: str  # whose version the report records
    executable: str  # the program in the venv's bin/


VLLM_ROUTER = Spec("vllm-router", "vllm-router==0.1.17", "vllm-router", "vllm-router")
LITELLM = Spec("litellm", "litellm[proxy]==1.108.7", "litellm", "litellm")
SPECS = (VLLM_ROUTER, LITELLM)


@dataclass(frozen=True, slots=True)
class Installed:
    spec: Spec
    venv: Path
    version: str

    @property
    def executable(self) -> str:
        return str(self.venv / "bin" / self.spec.executable)

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


@dataclass(frozen=True, slots=True)
class Skip:
    spec: Spec
    reason: str  # one line for the report


def _tail(text: str, lines: int = 3) -> str:
    """The last meaningful lines of pip's output (its WARNING lines about indexes left out)."""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip() and "WARNING" not in ln]
    return " / ".join(kept[-lines:]) or "no output"


def installed_version(python: str, distribution: str) -> str | None:
    """The installed version of ``distribution`` in the environment of ``python``."""
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    try:
        res = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = res.stdout.strip()
    return out if res.returncode == 0 and out else None


def ensure(spec: Spec, install: bool = True, cache: Path = CACHE) -> Installed | Skip:
    """The venv of ``spec``: reused when its stamp matches, else (re)created and installed."""
    venv = cache / spec.name
    stamp = venv / ".hanode-bench-requirement"
    exe = venv / "bin" / spec.executable
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == spec.requirement:
        version = installed_version(str(venv / "bin" / "python"), spec.distribution)
        if version is not None:
            return Installed(spec, venv, version)
    if not install:
        return Skip(spec, f"not installed in {venv} and --no-install given")
    print(f"bench: installing {spec.requirement} into {venv} (cached for later runs)", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--timeout",  # offline: fail in about a minute, not after pip's long retries
            "15",
            "--retries",
            "2",
            spec.requirement,
        ],
    ]
    for argv in steps:
        try:
            res = subprocess.run(
                argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            return Skip(spec, f"{' '.join(argv[1:4])} failed: {exc}")
        if res.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            what = "venv creation" if "venv" in argv else f"pip install {spec.requirement}"
            return Skip(spec, f"{what} failed (rc {res.returncode}): {_tail(res.stderr)}")
    version = installed_version(str(venv / "bin" / "python"), spec.distribution)
    if version is None or not exe.exists():
        return Skip(spec, f"{spec.requirement} installed but {exe} or its version is missing")
    stamp.write_text(spec.requirement + "\n")
    return Installed(spec, venv, version)
