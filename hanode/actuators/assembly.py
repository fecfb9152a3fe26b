"""Build a node's supervisor from its replicas and their local actuator settings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hanode.actuators.base import Actuator
from hanode.actuators.replica import build_actuator
from hanode.actuators.supervisor import Supervisor, SupervisorSettings
from hanode.engines.registry import get_adapter
from hanode.events import EventLog
from hanode.health.checker import ObservationSink
from hanode.policies.restart import RestartPolicy
from hanode.pool.lifecycle import ActuatorSpec, Desired, desired_for_standby
from hanode.pool.replica import Observation, ReplicaSpec, Role


def build_supervisor(
    replicas: Sequence[ReplicaSpec],
    actuations: Sequence[ActuatorSpec],
    data_dir: Path,
    events: EventLog,
    settings: SupervisorSettings,
    policy: RestartPolicy,
    warm_up_prompt: str,
    warm_up_max_tokens: int,
) -> Supervisor | None:
    """A supervisor for the replicas with an actuator (None when none has one), each desired
    RUN when active and as its standby mode says when a standby."""
    by_name = {a.name: a for a in actuations}
    actuators: dict[str, Actuator] = {}
    desired: dict[str, Desired] = {}
    for spec in replicas:
        actuation = by_name.get(spec.name)
        if actuation is None:
            continue
        actuator = build_actuator(
            spec,
            actuation,
            get_adapter(spec.engine),
            data_dir / "replicas",
            settings.stop_grace_s,
            settings.engine_timeout_s,
            warm_up_prompt,
            warm_up_max_tokens,
        )
        if actuator is None:
            continue
        actuators[spec.name] = actuator
        desired[spec.name] = (
            Desired.RUN if spec.role is Role.ACTIVE else desired_for_standby(actuation.standby)
        )
    if not actuators:
        return None
    supervisor = Supervisor(actuators, events, settings, policy, state_dir=data_dir / "replicas")
    for name, want in desired.items():
        supervisor.set_desired(name, want)
    return supervisor


class HealthTee:
    """An observation sink that also tells the supervisor each replica's health level: the
    checkers stay unaware of actuators."""

    def __init__(self, sink: ObservationSink, supervisor: Supervisor) -> None:
        self._sink = sink
        self._supervisor = supervisor

    def observe(self, name: str, obs: Observation) -> None:
        self._sink.observe(name, obs)
        self._supervisor.health(name, obs.level)
