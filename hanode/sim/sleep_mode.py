"""vLLM's sleep mode, simulated (pure state and timers; the handlers do the HTTP).

What vLLM (V1) does, and so what this does:
- ``POST /sleep?level=1`` answers 200 (empty body) once the engine is asleep (``--sleep-s``):
  level 1 keeps the weights in host memory, level 2 drops them too. Requests in flight are
  aborted (vLLM's default ``mode=abort``; here their connections are cut).
- While asleep (and while waking) new generation requests are accepted and held: vLLM pauses
  its scheduler and runs them after the wake. ``/health`` and ``/v1/models`` still answer.
- ``POST /wake_up`` answers 200 once awake (``--wake-s``) and the held requests start.
- ``GET /is_sleeping`` -> ``{"is_sleeping": bool}``; true until the wake has finished.
- GPU memory falls to what the CUDA context keeps (a few per cent) while asleep.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable

SLEEP_GPU_MEM = 0.03  # what a sleeping vLLM still holds: the CUDA context and buffers


class Phase(enum.Enum):
    AWAKE = "awake"
    FALLING_ASLEEP = "falling_asleep"
    ASLEEP = "asleep"
    WAKING = "waking"


class SleepMode:
    """One engine's sleep state; callbacks run on the loop when a transition completes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sleep_s: float, wake_s: float) -> None:
        self.loop = loop
        self.sleep_s = sleep_s
        self.wake_s = wake_s
        self.phase = Phase.AWAKE
        self.level = 0
        self._waiting: list[Callable[[], None]] = []  # answers to /sleep or /wake_up
        self._held: list[Callable[[], None]] = []  # generation requests held while asleep
        self._timer: asyncio.TimerHandle | None = None

    @property
    def is_sleeping(self) -> bool:
        return self.phase in (Phase.ASLEEP, Phase.WAKING)

    @property
    def holds_requests(self) -> bool:
        return self.phase is not Phase.AWAKE

    @property
    def gpu_freed(self) -> bool:
        return self.phase is Phase.ASLEEP

    def sleep(self, level: int, done: Callable[[], None]) -> None:
        """Fall asleep; ``done`` when asleep (at once if already asleep or falling asleep)."""
        if self.phase is Phase.ASLEEP:
            done()
            return
        if self.phase is Phase.WAKING:  # a sleep during a wake waits for the wake, then sleeps
            self._waiting.append(lambda: self.sleep(level, done))
            return
        self._waiting.append(done)
        if self.phase is Phase.AWAKE:
            self.phase, self.level = Phase.FALLING_ASLEEP, level
            self._timer = self.loop.call_later(self.sleep_s, self._finish, Phase.ASLEEP)

    def wake(self, done: Callable[[], None]) -> None:
        """Wake up; ``done`` once awake (at once if awake)."""
        if self.phase is Phase.AWAKE:
            done()
            return
        if self.phase is Phase.FALLING_ASLEEP:
            self._waiting.append(lambda: self.wake(done))
            return
        self._waiting.append(done)
        if self.phase is Phase.ASLEEP:
            self.phase = Phase.WAKING
            self._timer = self.loop.call_later(self.wake_s, self._finish, Phase.AWAKE)

    def hold(self, resume: Callable[[], None]) -> Callable[[], None]:
        """Run ``resume`` once awake; returns a function that forgets it (client gone)."""
        self._held.append(resume)

        def forget() -> None:
            if resume in self._held:
                self._held.remove(resume)

        return forget

    def _finish(self, phase: Phase) -> None:
        self._timer = None
        self.phase = phase
        if phase is Phase.AWAKE:
            self.level = 0
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback()
        if self.phase is Phase.AWAKE:
            held, self._held = self._held, []
            for resume in held:
                resume()

    def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._waiting.clear()
        self._held.clear()
