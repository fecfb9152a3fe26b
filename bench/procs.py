"""Processes of a benchmark run: started by us, watched through log files, stopped by pid.

Every process writes stdout/stderr to files in the run's temporary directory (never to a pipe
nobody reads), so a chatty process can not block. :class:`ProcGroup` stops everything it
started, newest first, from a ``finally``/``with`` block.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from hanode.devtools.procs import free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"


__all__ = ["BenchError", "Proc", "ProcGroup", "free_port"]


class BenchError(RuntimeError):
    """Something the benchmark needs did not work; the message says what and where to look."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) from /proc/PID/stat, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc/PID/task/TID/children)."""
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError):
                out.extend(int(p) for p in (task / "children").read_text().split())
    return out


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Proc:
    """One child process with its output in ``<log_dir>/<name>.out|.err``."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.out_path = log_dir / f"{name}.out"
        self.err_path = log_dir / f"{name}.err"
        self.popen: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise BenchError(f"{self.name} was not started")
        return self.popen.pid

    def start(self) -> Proc:
        out = self.out_path.open("wb")
        err = self.err_path.open("wb")
        self._files = [out, err]
        # A session of its own: a Ctrl-C reaches only us, and our finally blocks stop it.
        self.popen = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
        )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def describe_failure(self) -> str:
        code = self.popen.poll() if self.popen is not None else None
        return (
            f"{self.name} ({' '.join(self.argv)}) exit={code}\n"
            f"--- stdout ---\n{tail(self.out_path)}\n--- stderr ---\n{tail(self.err_path)}"
        )

    def wait_event(self, event: str, timeout_s: float) -> dict[str, Any]:
        """Wait for the JSON line ``{"event": EVENT, ...}`` on stdout and return it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                for line in self.out_path.read_text(errors="replace").splitlines():
                    if line.startswith("{") and f'"{event}"' in line:
                        with contextlib.suppress(ValueError):
                            data = json.loads(line)
                            if isinstance(data, dict) and data.get("event") == event:
                                return data
            if not self.alive():
                raise BenchError(f"{self.name} exited before '{event}':\n{self.describe_failure()}")
            time.sleep(0.05)
        raise BenchError(f"{self.name}: no '{event}' in {timeout_s}s:\n{self.describe_failure()}")

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, wait, then SIGKILL; only this process's own pid is signalled."""
        popen = self.popen
        if popen is not None and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(timeout_s)
        for f in self._files:
            f.close()
        self._files = []


class ProcGroup:
    """Owns the processes of one run; ``with ProcGroup() as g`` stops them all on exit."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []
        self.extra_stops: list[Callable[[], None]] = []

    def start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc.start()

    def stop_all(self) -> None:
        for stop in reversed(self.extra_stops):
            with contextlib.suppress(Exception):
                stop()
        self.extra_stops = []
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self.procs = []

    def __enter__(self) -> ProcGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, bytes]:
    """One loopback HTTP request; returns (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout_s)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1
) -> None:
    """Poll ``check`` (exceptions count as "not yet") until true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
            if check():
                return
        time.sleep(interval_s)
    raise BenchError(f"timed out after {timeout_s}s waiting for {what}")
