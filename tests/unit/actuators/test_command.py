"""The command actuator with real (tiny) processes: its own session, the log, SIGTERM then
SIGKILL, the state file, adoption by a new instance (the daemon restarted), replacement when the
command changed, and a stale state file whose pid now belongs to another process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from hanode.actuators.command import CommandProcess, RunRecord, boot_id, start_ticks
from tests.unit.actuators.fakes import run_async

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]
STUBBORN = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('up', flush=True); time.sleep(600)",
]


async def printed_up(proc: CommandProcess) -> None:
    """Until the child wrote its first line to the log (bounded: 10 s)."""
    for _ in range(500):
        if "up" in proc.log_path.read_text():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("the child wrote nothing to its log")


def kill_group(pid: int | None) -> None:
    if pid is not None and start_ticks(pid) is not None:
        os.killpg(pid, signal.SIGKILL)


@run_async
async def test_start_observe_stop_in_its_own_session_with_a_log(tmp_path: Path) -> None:
    proc = CommandProcess("r0", SLEEPER, tmp_path, stop_grace_s=5.0)
    assert not (await proc.observe()).running
    await proc.start()
    status = await proc.observe()
    try:
        assert status.running and status.pid is not None
        assert os.getsid(status.pid) == status.pid  # its own session and process group
        record = RunRecord.from_json(proc.state_path.read_bytes())
        assert record is not None and record.pid == status.pid and record.alive()
        await proc.start()  # never two copies
        assert (await proc.observe()).pid == status.pid
        await printed_up(proc)  # stdout goes to the log
    finally:
        await proc.stop()
    assert not (await proc.observe()).running
    assert start_ticks(status.pid) is None
    assert not proc.state_path.exists()


@run_async
async def test_stop_kills_after_the_grace_period_when_sigterm_is_ignored(tmp_path: Path) -> None:
    proc = CommandProcess("r0", STUBBORN, tmp_path, stop_grace_s=0.3)
    await proc.start()
    pid = (await proc.observe()).pid
    assert pid is not None
    try:
        await printed_up(proc)  # its SIGTERM handler is installed before it prints
        await proc.stop()
        assert start_ticks(pid) is None
    finally:
        kill_group(pid)


@run_async
async def test_an_exit_is_seen_with_its_code(tmp_path: Path) -> None:
    proc = CommandProcess("r0", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path)
    await proc.start()
    for _ in range(200):
        status = await proc.observe()
        if not status.running:
            break
        await asyncio.sleep(0.02)
    assert not status.running and status.exit_code == 3 and "code 3" in status.detail


@run_async
async def test_a_new_instance_adopts_the_running_process(tmp_path: Path) -> None:
    first = CommandProcess("r0", SLEEPER, tmp_path)
    await first.start()
    pid = (await first.observe()).pid
    assert pid is not None
    try:
        second = CommandProcess("r0", SLEEPER, tmp_path)  # the daemon restarted
        said = await second.adopt()
        assert said == f"adopted pid {pid}, left running by an earlier daemon"
        assert (await second.observe()).pid == pid
        await second.start()
        assert (await second.observe()).pid == pid  # not a second copy
        await second.stop()  # an adopted process (not our child) is stopped as well
        assert start_ticks(pid) is None or _zombie(pid)
    finally:
        kill_group(pid)


def _zombie(pid: int) -> bool:
    """Our own child that another instance stopped stays a zombie until we reap it."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


@run_async
async def test_a_changed_command_replaces_the_running_process(tmp_path: Path) -> None:
    first = CommandProcess("r0", SLEEPER, tmp_path)
    await first.start()
    pid = (await first.observe()).pid
    assert pid is not None
    try:
        second = CommandProcess("r0", [*SLEEPER, "changed"], tmp_path, stop_grace_s=2.0)
        said = await second.adopt()
        assert said.startswith(f"replaced pid {pid}")
        assert not (await second.observe()).running
        assert not (await first.observe()).running  # the old one is gone
    finally:
        kill_group(pid)


@run_async
async def test_a_stale_state_file_with_a_reused_pid_is_not_adopted(tmp_path: Path) -> None:
    other = subprocess.Popen(SLEEPER, start_new_session=True)  # not ours: another start time
    try:
        ticks = start_ticks(other.pid)
        assert ticks is not None
        stale = RunRecord(other.pid, ticks - 1, boot_id(), tuple(SLEEPER))
        (tmp_path / "r0.json").write_bytes(stale.to_json())
        proc = CommandProcess("r0", SLEEPER, tmp_path)
        assert await proc.adopt() == ""
        assert not (tmp_path / "r0.json").exists()
        assert other.poll() is None  # never signalled
        await proc.stop()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_corrupt_state_file_is_ignored(tmp_path: Path) -> None:
    for junk in (b"", b"{", b'{"pid": "1"}', b'{"pid": 1, "ticks": 1, "boot": "", "argv": []}'):
        assert RunRecord.from_json(junk) is None
