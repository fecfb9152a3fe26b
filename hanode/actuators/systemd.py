"""``actuator = "systemd"``: the replica is a systemd unit (e.g. ``vllm@0.service``).

hanode calls ``systemctl`` (``start``, ``stop``, ``show``) as a subprocess on the
event loop, never blocking it. Give the unit ``Restart=no``: hanode does the restarts, with
backoff and a crash-loop stop; systemd restarting too would fight it (see
``systemd/vllm@.service``). The unit name comes from the local config only.
"""

from __future__ import annotations

import asyncio
import contextlib

from hanode.actuators.base import ActuatorError, ProcessStatus

SYSTEMCTL_TIMEOUT_S = 30.0  # a stop waits for the unit's own TimeoutStopSec
_RUNNING = {"active", "activating", "reloading", "deactivating"}


class SystemdUnit:
    """The process half of a ``systemd`` actuator."""

    def __init__(self, unit: str, systemctl: str = "systemctl") -> None:
        self.unit = unit
        self.systemctl = systemctl

    async def _run(self, *args: str, timeout: float = SYSTEMCTL_TIMEOUT_S) -> tuple[int, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.systemctl,
                "--no-ask-password",
                *args,
                "--",
                self.unit,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise ActuatorError(f"cannot run {self.systemctl}: {exc.strerror or exc}") from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise ActuatorError(
                f"systemctl {args[0]} {self.unit}: no answer in {timeout}s"
            ) from None
        return proc.returncode or 0, out.decode("utf-8", "replace").strip()

    async def _act(self, verb: str) -> None:
        code, out = await self._run(verb)
        if code != 0:
            last = out.splitlines()[-1] if out else f"exit code {code}"
            raise ActuatorError(f"systemctl {verb} {self.unit}: {last}")

    async def adopt(self) -> str:
        status = await self.observe()
        return f"unit {self.unit} is already {status.detail}" if status.running else ""

    async def start(self) -> None:
        await self._act("start")

    async def stop(self) -> None:
        await self._act("stop")

    async def observe(self) -> ProcessStatus:
        try:
            code, out = await self._run(
                "show", "-p", "ActiveState", "-p", "SubState", "-p", "MainPID",
                "-p", "ExecMainStatus", timeout=10.0,
            )  # fmt: skip
        except ActuatorError as exc:
            return ProcessStatus(False, detail=str(exc))
        props = dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)
        if code != 0 or "ActiveState" not in props:
            return ProcessStatus(False, detail=f"systemctl show {self.unit}: {out or code}")
        state = props["ActiveState"]
        pid = _int(props.get("MainPID"))
        status = _int(props.get("ExecMainStatus"))
        detail = f"{state} ({props.get('SubState', '')})"
        if state in _RUNNING:
            return ProcessStatus(True, pid=pid or None, detail=detail)
        return ProcessStatus(False, exit_code=status, detail=detail)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None
