"""The narrow interfaces between the supervisor and what acts on a replica's process.

A replica's actuator has two halves: the process (``ProcessControl``: a command hanode runs
itself, or a systemd unit) and, where the engine has one, its sleep mode (``EngineControl``).
The supervisor only sees :class:`Actuator`; tests give it a fake.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class ActuatorError(Exception):
    """An action failed (one line for events and logs); the supervisor tries again later."""


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """What the actuator saw of the process just now."""

    running: bool
    pid: int | None = None
    exit_code: int | None = None  # of the last run, when it exited and the code is known
    detail: str = ""


class ProcessControl(Protocol):
    """Start and stop one replica's process; ``observe`` never raises."""

    async def adopt(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def observe(self) -> ProcessStatus: ...


class EngineControl(Protocol):
    """The engine's sleep mode: GPU memory freed, weights kept in host memory."""

    async def sleep(self) -> None: ...

    async def wake(self) -> None: ...

    async def is_sleeping(self) -> bool | None: ...

    async def warm_up(self) -> bool: ...


class Actuator(Protocol):
    """Everything the supervisor does to one replica."""

    @property
    def can_sleep(self) -> bool: ...

    async def adopt(self) -> str:
        """Called once before anything else: take over a process a previous run of the daemon
        left running (or replace it); says what was found, for an event ("" when nothing)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def restart(self) -> None: ...

    async def sleep(self) -> None: ...

    async def wake(self) -> None:
        """Wake the engine and send one short warm-up prompt before it takes traffic."""
        ...

    async def is_sleeping(self) -> bool | None:
        """The engine's own answer; None when it cannot say (SGLang) or did not answer. Asked
        only when it matters: every ask is a line in the engine's access log."""
        ...

    async def observe(self) -> ProcessStatus: ...
