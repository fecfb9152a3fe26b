"""Where hanode's time goes: py-spy samples the node under a c=64 wrk run (self time)."""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import say
from bench.wrk import run_wrk

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(slots=True)
class Profile:
    total: int = 0
    by_function: Counter[str] = field(default_factory=Counter)  # self samples
    by_file: Counter[str] = field(default_factory=Counter)  # self samples
    inclusive: Counter[str] = field(default_factory=Counter)  # samples with function on stack
    syscalls: Counter[str] = field(default_factory=Counter)  # "write <- hanode func" (native)
    idle: int = 0  # samples of threads waiting for work (dropped from the counts above)
    error: str = ""


def start_record(
    py_spy: str, pid: int, duration_s: int, output: Path, native: bool = False
) -> subprocess.Popen[bytes]:
    """Python frames only, without pausing the process (``--nonblocking``, barely perturbs it);
    or ``native``: C frames too (uvloop, libc syscalls), which needs py-spy to pause the process
    for each sample, so that run is slower and only its shares are meaningful."""
    mode = ["--native", "--rate", "100"] if native else ["--nonblocking", "--rate", "250"]
    argv = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(duration_s),
        "--format",
        "raw",
        "--output",
        str(output),
        *mode,
    ]
    log = output.with_suffix(".log").open("wb")
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        log.close()


def _short_file(path: str) -> str:
    for marker in ("/site-packages/", "/lib/python3"):
        i = path.find(marker)
        if i >= 0:
            return path[i + len(marker) :].lstrip("/")
    i = path.find("/hanode/")
    return path[i + 1 :] if i >= 0 else path


def _split_frame(frame: str) -> tuple[str, str]:
    m = _FRAME_RE.match(frame.strip())
    if m is None:
        return frame.strip(), "?"
    return m.group("func"), _short_file(m.group("file"))


def _is_idle(frames: list[str]) -> bool:
    """A thread-pool worker blocked on its queue (py-spy does not always see it as idle)."""
    for f in frames:
        if "PyThread_acquire_lock" in f or "SimpleQueue_get" in f:
            return True
    return frames[-1].startswith("_worker (") and "concurrent/futures/thread.py" in frames[-1]


def _leaf_key(frames: list[str]) -> tuple[str, str]:
    func, file = _split_frame(frames[-1])
    if func.startswith("0x") and len(frames) > 1:
        # An unresolved address: name it by the closest caller py-spy could name.
        pfunc, pfile = _split_frame(frames[-2])
        return f"[unresolved] under {pfunc}", f"{file} via {pfile}"
    return func, file


def parse_raw(text: str) -> Profile:
    """py-spy ``--format raw``: one ``frame;frame;...;leaf COUNT`` line per distinct stack."""
    prof = Profile()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        # py-spy may prefix the thread ("process ..."/"thread ..."); keep "name (file)" frames.
        frames = [f for f in frames if f.endswith(")")]
        if not frames:
            continue
        if _is_idle(frames):
            prof.idle += count
            continue
        prof.total += count
        func, file = _leaf_key(frames)
        prof.by_function[f"{func} ({file})"] += count
        if func in ("write", "writev", "send", "sendmsg", "read", "recv", "readv"):
            # Which hanode function made this system call?
            caller = next((f for f in reversed(frames) if "hanode/" in f), "")
            prof.syscalls[f"{func} <- {_split_frame(caller)[0] if caller else '?'}"] += count
        prof.by_file[file] += count
        seen: set[str] = set()
        for f in frames:
            fn, fl = _split_frame(f)
            key = f"{fn} ({fl})"
            if key not in seen:
                seen.add(key)
                prof.inclusive[key] += count
    return prof


def load(output: Path) -> Profile:
    try:
        text = output.read_text(errors="replace")
    except OSError as exc:
        log = output.with_suffix(".log")
        detail = log.read_text(errors="replace")[-500:] if log.exists() else ""
        return Profile(error=f"no py-spy output ({exc}): {detail}")
    prof = parse_raw(text)
    if prof.total == 0:
        prof.error = "py-spy recorded no samples"
    return prof


def profile_node(
    py_spy: str,
    pid: int,
    wrk_binary: str,
    url: str,
    script: Path,
    tmp: Path,
    duration_s: float,
    native: bool = False,
) -> tuple[Profile, float | None]:
    """py-spy on the hanode process during a c=64 wrk run of ``duration_s``."""
    if not Path(py_spy).exists():
        return Profile(error=f"py-spy not found ({py_spy})"), None
    out = tmp / f"hanode-profile{'-native' if native else ''}.txt"
    seconds = max(2, round(duration_s) - 1)
    spy = start_record(py_spy, pid, seconds, out, native=native)
    rps: float | None = None
    try:
        time.sleep(0.5)  # let py-spy attach before the load starts
        rps = run_wrk(wrk_binary, url, script, 64, duration_s).rps
        spy.wait(duration_s + 30)
    finally:
        if spy.poll() is None:
            spy.terminate()
            spy.wait(10)
    prof = load(out)
    detail = f" ({prof.error})" if prof.error else ""
    say(f"profile{' (native)' if native else ''}: {prof.total} samples{detail}")
    return prof, rps
