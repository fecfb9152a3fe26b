"""One replica's actuator: its process half (command or systemd unit) and, where the engine
has one and the replica may sleep, its sleep half. Built from local config only."""

from __future__ import annotations

from pathlib import Path

from hanode.actuators.base import ActuatorError, EngineControl, ProcessControl, ProcessStatus
from hanode.actuators.command import CommandProcess
from hanode.actuators.engine_sleep import SLEEP_ENGINES, EngineSleep
from hanode.actuators.systemd import SystemdUnit
from hanode.engines.base import EngineAdapter
from hanode.pool.lifecycle import ActuatorSpec
from hanode.pool.replica import ReplicaSpec


class ReplicaActuator:
    """:class:`hanode.actuators.base.Actuator` over a process and an optional engine sleep."""

    def __init__(self, process: ProcessControl, engine: EngineControl | None = None) -> None:
        self.process = process
        self.engine = engine

    @property
    def can_sleep(self) -> bool:
        return self.engine is not None

    async def adopt(self) -> str:
        return await self.process.adopt()

    async def start(self) -> None:
        await self.process.start()

    async def stop(self) -> None:
        await self.process.stop()

    async def restart(self) -> None:
        await self.process.stop()
        await self.process.start()

    def _engine(self) -> EngineControl:
        if self.engine is None:
            raise ActuatorError("this replica's engine has no sleep mode")
        return self.engine

    async def sleep(self) -> None:
        await self._engine().sleep()

    async def wake(self) -> None:
        engine = self._engine()
        await engine.wake()
        await engine.warm_up()  # a failed warm-up is no failed wake: L2 decides what serves

    async def is_sleeping(self) -> bool | None:
        return None if self.engine is None else await self.engine.is_sleeping()

    async def observe(self) -> ProcessStatus:
        return await self.process.observe()


def build_actuator(
    spec: ReplicaSpec,
    actuation: ActuatorSpec,
    adapter: EngineAdapter,
    state_dir: Path,
    stop_grace_s: float,
    engine_timeout_s: float,
    warm_up_prompt: str,
    warm_up_max_tokens: int,
) -> ReplicaActuator | None:
    """The actuator a [[replicas]] entry asks for, or None for ``actuator = "none"``."""
    process: ProcessControl
    if actuation.actuator == "command":
        process = CommandProcess(spec.name, actuation.command, state_dir, stop_grace_s)
    elif actuation.actuator == "systemd" and actuation.unit:
        process = SystemdUnit(actuation.unit)
    else:
        return None
    engine = None
    if spec.engine in SLEEP_ENGINES:
        engine = EngineSleep(
            spec.url,
            spec.engine,
            adapter,
            spec.model,
            engine_timeout_s,
            warm_up_prompt,
            warm_up_max_tokens,
        )
    return ReplicaActuator(process, engine)
