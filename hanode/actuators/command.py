"""``actuator = "command"``: hanode runs the replica's process itself.

- The process gets its own session (``start_new_session``), so stopping it reaches the whole
  group (vLLM's API server and its engine-core children) and a signal to the daemon's
  terminal does not reach it. Its stdout and stderr go to ``<data_dir>/replicas/NAME.log``.
- Stop is SIGTERM to the group, then SIGKILL after ``stop_grace_s``.
- ``<data_dir>/replicas/NAME.json`` records the run (pid, its start time in clock ticks since
  boot, the boot id, the command). When the daemon restarts it adopts a process that is still
  that run (same boot, pid and start time: a reused pid has another start time), and replaces
  it when the configured command changed. Never two copies of one replica.
- Stopping the daemon leaves its replicas running (a daemon upgrade drops no traffic); the next
  daemon adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import structlog

from hanode.actuators.base import ActuatorError, ProcessStatus

log = structlog.get_logger("hanode.actuators")

LOG_MAX_BYTES = 64 * 1024 * 1024  # a longer log is moved to NAME.log.1 at the next start
_POLL_S = 0.05  # how often a stop looks whether the process is gone


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of the command, as written to the state file."""

    pid: int
    ticks: int
    boot: str
    argv: tuple[str, ...]

    def alive(self) -> bool:
        return self.boot == boot_id() and start_ticks(self.pid) == self.ticks

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"pid": self.pid, "ticks": self.ticks, "boot": self.boot, "argv": list(self.argv)}
        )

    @staticmethod
    def from_json(data: bytes) -> RunRecord | None:
        try:
            raw = orjson.loads(data)
            argv = raw["argv"]
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                return None
            pid, ticks = raw["pid"], raw["ticks"]
            if not isinstance(pid, int) or not isinstance(ticks, int) or pid < 2:
                return None
            return RunRecord(pid, ticks, str(raw["boot"]), tuple(argv))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """``sig`` to the process group the process leads (its own session), else the process."""
    with contextlib.suppress(ProcessLookupError):
        try:
            leads = os.getpgid(pid) == pid
        except ProcessLookupError:
            return
        if leads:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


class CommandProcess:
    """The process half of a ``command`` actuator (see the module's docstring)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        state_dir: Path,
        stop_grace_s: float = 10.0,
        env: dict[str, str] | None = None,
    ) -> None:
        if not argv or not argv[0]:
            raise ValueError("a command needs at least the program")
        self.name = name
        self.argv = tuple(argv)
        self.state_dir = state_dir
        self.state_path = state_dir / f"{name}.json"
        self.log_path = state_dir / f"{name}.log"
        self.stop_grace_s = stop_grace_s
        self.env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._run: RunRecord | None = None
        self._last_exit: int | None = None

    # -- state file --------------------------------------------------------------------------
    def _read_record(self) -> RunRecord | None:
        try:
            return RunRecord.from_json(self.state_path.read_bytes())
        except OSError:
            return None

    def _write_record(self, record: RunRecord) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".json.tmp")
        tmp.write_bytes(record.to_json())
        os.replace(tmp, self.state_path)

    def _forget(self) -> None:
        self._run = None
        self._proc = None
        with contextlib.suppress(FileNotFoundError):
            self.state_path.unlink()

    # -- actions -----------------------------------------------------------------------------
    async def adopt(self) -> str:
        record = self._read_record()
        if record is None:
            return ""
        if not record.alive():
            self._forget()
            return ""
        self._run = record
        if record.argv != self.argv:
            await self.stop()
            return f"replaced pid {record.pid}: its command is no longer the configured one"
        return f"adopted pid {record.pid}, left running by an earlier daemon"

    async def start(self) -> None:
        if (await self.observe()).running:
            return  # never two copies
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._last_exit = None
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size > LOG_MAX_BYTES:
                os.replace(self.log_path, self.log_path.with_suffix(".log.1"))
        try:
            with open(self.log_path, "ab") as out:
                proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=self.env,
                    close_fds=True,
                )
        except OSError as exc:
            raise ActuatorError(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        ticks = start_ticks(proc.pid)
        if ticks is None:  # exited (or became a zombie) before we looked
            self._last_exit = proc.poll()
            ticks = 0
        self._proc = proc
        self._run = RunRecord(proc.pid, ticks, boot_id(), self.argv)
        self._write_record(self._run)
        log.info("process_started", replica=self.name, pid=proc.pid, log=str(self.log_path))

    async def stop(self) -> None:
        run = self._run
        if run is None or not (await self.observe()).running:
            self._forget()
            return
        _signal_group(run.pid, signal.SIGTERM)
        if not await self._gone_within(run, self.stop_grace_s):
            log.warning("process_killed", replica=self.name, pid=run.pid, grace_s=self.stop_grace_s)
            _signal_group(run.pid, signal.SIGKILL)
            await self._gone_within(run, 5.0)
        self._forget()

    async def _gone_within(self, run: RunRecord, seconds: float) -> bool:
        for _ in range(max(1, int(seconds / _POLL_S))):
            if not self._running(run):
                return True
            await asyncio.sleep(_POLL_S)
        return not self._running(run)

    def _running(self, run: RunRecord) -> bool:
        proc = self._proc
        if proc is not None and proc.pid == run.pid:
            code = proc.poll()  # reaps our own child
            if code is not None:
                self._last_exit = code
                return False
            return True
        return run.alive()

    async def observe(self) -> ProcessStatus:
        run = self._run
        if run is None:
            return ProcessStatus(False, exit_code=self._last_exit, detail="not running")
        if self._running(run):
            return ProcessStatus(True, pid=run.pid, detail=f"pid {run.pid}")
        self._forget()
        code = self._last_exit  # None for an adopted process: not our child, code unknown
        why = f"exited with code {code}" if code is not None else "exited"
        return ProcessStatus(False, exit_code=code, detail=f"pid {run.pid} {why}")
