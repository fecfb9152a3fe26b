"""The words for a replica's process lifecycle, shared by the node's supervisor (actuators),
the replicated state and the planner: what is wanted of a replica, and what its node saw."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class StandbyMode(enum.StrEnum):
    """How a standby waits: fully loaded, in the engine's sleep mode, or not running at all."""

    HOT = "hot"  # running and loaded, serves nothing
    SLEEP = "sleep"  # engine sleep mode: weights in host memory, GPU freed; wakes in seconds
    STOPPED = "stopped"  # process not running; a cold start takes the engine's load time


class Desired(enum.StrEnum):
    """What the leader (or, standalone, the node itself) wants a replica's process to be."""

    RUN = "run"
    SLEEP = "sleep"
    STOP = "stop"


class Observed(enum.StrEnum):
    """What a replica's node last saw of its process, reported back to the cluster."""

    UNKNOWN = "unknown"  # no actuator, or not looked at yet
    STARTING = "starting"  # started or woken, not yet answering L2
    RUNNING = "running"
    SLEEPING = "sleeping"
    STOPPED = "stopped"
    BACKOFF = "backoff"  # exited or failed; waiting for the next restart
    CRASH_LOOP = "crash_loop"  # too many restarts: stopped until `hanodectl restart NAME`

    @property
    def expected_down(self) -> bool:
        """Down on purpose: trips no breaker, raises no incident, is not lost capacity."""
        return self in (Observed.SLEEPING, Observed.STOPPED)


def desired_for_standby(mode: StandbyMode) -> Desired:
    """The process state a standby in ``mode`` is kept in while it is not needed."""
    return {
        StandbyMode.HOT: Desired.RUN,
        StandbyMode.SLEEP: Desired.SLEEP,
        StandbyMode.STOPPED: Desired.STOP,
    }[mode]


ACTUATORS = ("none", "command", "systemd")
RELOADS = ("restart", "engine")  # a rolling reload restarts the process, or asks the engine


@dataclass(frozen=True, slots=True)
class ActuatorSpec:
    """How this node acts on one of its own replicas ([[replicas]] actuator, command, unit,
    standby). Local config only: it is never replicated, since ``command`` is run as is."""

    name: str
    actuator: str = "none"  # one of ACTUATORS; "none": hanode only routes
    command: tuple[str, ...] = ()  # "command": the program and its arguments
    unit: str | None = None  # "systemd": the unit, e.g. "vllm@0.service"
    standby: StandbyMode = StandbyMode.HOT  # how it waits while it is a standby
    reload: str = "restart"  # one of RELOADS: how a rolling reload reloads it
