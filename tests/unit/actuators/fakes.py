"""A fake actuator and clock for the supervisor's tests: what the process does is set by the
test, and every action is recorded."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from hanode.actuators.base import ActuatorError, ProcessStatus


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeActuator:
    def __init__(self, can_sleep: bool = True, adopt_says: str = "") -> None:
        self.running = False
        self.sleeping = False
        self.pid = 100
        self.calls: list[str] = []
        self.fail_start: str | None = None  # ActuatorError message for start()
        self.exit_at_once = False  # start() "succeeds" but the process is gone at once
        self._can_sleep = can_sleep
        self._adopt_says = adopt_says

    @property
    def can_sleep(self) -> bool:
        return self._can_sleep

    async def adopt(self) -> str:
        self.calls.append("adopt")
        return self._adopt_says

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail_start is not None:
            raise ActuatorError(self.fail_start)
        if self.running:
            return
        self.pid += 1
        self.running = not self.exit_at_once
        self.sleeping = False

    async def stop(self) -> None:
        self.calls.append("stop")
        self.running = False
        self.sleeping = False

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def sleep(self) -> None:
        self.calls.append("sleep")
        self.sleeping = True

    async def wake(self) -> None:
        self.calls.append("wake")
        self.sleeping = False

    async def is_sleeping(self) -> bool | None:
        self.calls.append("is_sleeping")
        return self.sleeping if self.running else None

    async def observe(self) -> ProcessStatus:
        if not self.running:
            return ProcessStatus(False, exit_code=1, detail="exited with code 1")
        return ProcessStatus(True, pid=self.pid, detail=f"pid {self.pid}")

    def crash(self) -> None:
        self.running = False


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A plain test from a coroutine function, bounded in time (no pytest-asyncio here);
    fixtures pass through."""

    @functools.wraps(fn)
    def wrapper(**fixtures: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(**fixtures), 30.0))

    return wrapper
