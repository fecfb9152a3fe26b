"""[[replicas]] actuator keys (actuator, command, unit, standby) and [recovery]: what they build,
and one clear line per bad combination."""

from __future__ import annotations

import pytest

from hanode.actuators.supervisor import SupervisorSettings
from hanode.config import parse_config
from hanode.policies.restart import RestartPolicy
from hanode.pool.lifecycle import ActuatorSpec, StandbyMode
from hanode.settings.schema import build
from tests.unit.settings.config_cases import SRC, minimal, one_error, with_, with_replica

WHERE = f"{SRC}: [[replicas]][0]"


def test_defaults_only_route() -> None:
    cfg = parse_config(minimal(), SRC)
    assert cfg.actuators == (ActuatorSpec("r1"),)
    assert cfg.actuators[0].actuator == "none" and cfg.actuators[0].standby is StandbyMode.HOT
    assert build(RestartPolicy, cfg.recovery) == RestartPolicy()
    assert build(SupervisorSettings, cfg.recovery) == SupervisorSettings()


def test_a_command_replica_and_a_systemd_standby() -> None:
    data = minimal()
    data["replicas"][0].update(actuator="command", command=["vllm", "serve", "m"])
    data["replicas"].append(
        {
            "name": "r2",
            "model": "m",
            "url": "http://127.0.0.1:8002",
            "role": "standby",
            "actuator": "systemd",
            "unit": "vllm@1.service",
            "standby": "sleep",
        }
    )
    cfg = parse_config(data, SRC)
    assert cfg.actuators == (
        ActuatorSpec("r1", "command", ("vllm", "serve", "m"), None),
        ActuatorSpec("r2", "systemd", (), "vllm@1.service", StandbyMode.SLEEP),
    )
    # Nothing of it reaches the replica's spec, which the cluster replicates.
    assert not hasattr(cfg.replicas[0], "command")


def test_recovery_settings_build_the_policy_and_the_supervisor() -> None:
    cfg = parse_config(
        with_(
            "recovery",
            backoff_base_s=0.1,
            backoff_max_s=2.0,
            backoff_jitter=0.0,
            crash_loop_restarts=3,
            crash_loop_window_s=60.0,
            poll_interval_s=0.1,
            start_timeout_s=30.0,
            stop_grace_s=1.0,
            engine_timeout_s=5.0,
        ),
        SRC,
    )
    assert build(RestartPolicy, cfg.recovery) == RestartPolicy(0.1, 2.0, 0.0, 3, 60.0)
    s = build(SupervisorSettings, cfg.recovery, health_settle_s=1.0)
    assert (s.poll_interval_s, s.start_timeout_s, s.stop_grace_s, s.engine_timeout_s) == (
        0.1,
        30.0,
        1.0,
        5.0,
    )


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (
            {"actuator": "command"},
            f'{WHERE}.command: actuator = "command" needs command = ["program", "arg", ...]',
        ),
        ({"actuator": "command", "command": ["", "x"]}, f"{WHERE}.command: the first item"),
        ({"command": ["vllm"]}, f'{WHERE}.command: is only used with actuator = "command"'),
        ({"actuator": "systemd"}, f'{WHERE}.unit: actuator = "systemd" needs unit ='),
        ({"unit": "vllm@0.service"}, f'{WHERE}.unit: is only used with actuator = "systemd"'),
        (
            {"actuator": "systemd", "unit": "--now"},
            f"{WHERE}.unit: '--now' is not a systemd unit name",
        ),
        ({"standby": "sleep"}, f'{WHERE}.standby: standby = "sleep" needs an actuator'),
        ({"standby": "stopped"}, f'{WHERE}.standby: standby = "stopped" needs an actuator'),
        (
            {"actuator": "systemd", "unit": "tgi.service", "engine": "tgi", "standby": "sleep"},
            f'{WHERE}.standby: standby = "sleep" needs an engine with a sleep mode',
        ),
        ({"actuator": "docker"}, f"{WHERE}.actuator: "),
        ({"standby": "warm"}, f"{WHERE}.standby: "),
        ({"actuator": "command", "command": "vllm serve"}, f"{WHERE}.command: "),
    ],
)
def test_bad_combinations_are_one_line_each(values: dict[str, object], error: str) -> None:
    assert one_error(with_replica(**values)).startswith(error)


def test_backoff_base_above_max() -> None:
    err = one_error(with_("recovery", backoff_base_s=10.0, backoff_max_s=5.0))
    assert err == f"{SRC}: [recovery].backoff_base_s: must not exceed backoff_max_s"


def test_jitter_above_half_is_refused() -> None:
    assert one_error(with_("recovery", backoff_jitter=0.8)).startswith(
        f"{SRC}: [recovery].backoff_jitter: "
    )
