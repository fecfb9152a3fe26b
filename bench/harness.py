"""What every part of the benchmark shares: its processes, their CPU time, their logs.

Processes are :mod:`hanode.devtools.procs` children (the same harness the demo and the e2e
tests use), started into the run's temporary directory and stopped by their own pid, newest
first, by :class:`ProcGroup`. CPU time comes from ``/proc`` so a proxy is charged only for what
it used.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from hanode.devtools.procs import ChildProcess, NodeProcess, SimProcess, free_port

CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
P = TypeVar("P", bound=ChildProcess)

__all__ = ["HOST", "BenchError", "ProcGroup", "free_port", "percentile", "say"]


class BenchError(RuntimeError):
    """Something the benchmark needs did not work; the message says what and where to look."""


def failure_line(exc: BaseException) -> str:
    """What failed, and the process's last words (a config error, a traceback's last line)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    head = lines[0].split("; cmd=")[0][:200]
    tail = lines[-1][:200] if len(lines) > 1 else ""
    return f"{head}: {tail}" if tail else head


def say(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[k])


# -- CPU time ---------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads) from /proc/PID/stat, in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc/PID/task/TID/children)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out.extend(int(p) for p in (task / "children").read_text().split())
    return out


def descendants(pid: int) -> list[int]:
    """Every child of ``pid``, their children and so on (a multi-worker node's workers)."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 4096:
        kids = child_pids(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU-seconds of ``pid``, of its children it has reaped (a worker that died between two
    samples) and of every living descendant."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    total = sum(int(f) for f in fields[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
    for child in descendants(pid):
        with contextlib.suppress(OSError, ValueError):
            total += cpu_seconds(child)
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU-seconds of the whole machine since boot, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def own_cpu() -> float:
    """CPU-seconds of this process and of every child (and their children) already reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# -- logs -------------------------------------------------------------------------------------
def log_complaints(text: str) -> Counter[str]:
    """``level: event`` of every warning/error JSON line (and tracebacks) in a node's log."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line.startswith("{"):
            if "Traceback" in line:
                counts["traceback"] += 1
            continue
        try:
            doc: Any = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and doc.get("level") in ("warning", "error", "critical"):
            counts[f"{doc.get('level')}: {doc.get('event')}"] += 1
    return counts


# -- processes --------------------------------------------------------------------------------
class ProcGroup:
    """Owns the processes of one run, its logs in ``log_dir``; ``with`` stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, ChildProcess]] = []
        self.extra_stops: list[Callable[[], None]] = []

    def _log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def add(self, name: str, start: Callable[[Path], P]) -> P:
        """Start a process with its log at ``<log_dir>/<name>.log`` and keep it."""
        proc = start(self._log(name))
        self.procs.append((name, proc))
        return proc

    def sim(self, name: str, *args: str, timeout: float = 20.0) -> SimProcess:
        """A simulator on a free port, returned once its /health answers 200."""
        return self.add(name, lambda log: SimProcess(*args, timeout=timeout, log_path=log))

    def node(self, name: str, config: Path, timeout: float = 30.0) -> NodeProcess:
        """``hanode run`` on ``config`` (log level info), returned once it listens."""
        return self.add(
            name,
            lambda log: NodeProcess(
                config, timeout=timeout, log_path=log, extra_args=["--log-level", "info"]
            ),
        )

    def command(self, name: str, argv: list[str]) -> ChildProcess:
        """Any other program (nginx), not waited for."""
        return self.add(name, lambda log: ChildProcess(argv, log_path=log))

    def stop_all(self) -> None:
        for stop in reversed(self.extra_stops):
            with contextlib.suppress(Exception):
                stop()
        self.extra_stops = []
        for _, proc in reversed(self.procs):
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

    def exited(self) -> list[str]:
        """``name (rc): last lines`` of every process of ours that is no longer running."""
        out = []
        for name, proc in self.procs:
            if not proc.alive:
                last = "\n".join(proc.output().splitlines()[-12:])
                out.append(f"{name} exited (rc {proc.proc.poll()}): {last[-800:]}")
        return out
