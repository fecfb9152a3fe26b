"""[recovery]: how a node restarts the replicas it runs (``actuator`` in [[replicas]]), and the
rules for a replica's actuator keys (checked with the rest of its [[replicas]] entry)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hanode.actuators.engine_sleep import SLEEP_ENGINES
from hanode.actuators.supervisor import SupervisorSettings
from hanode.policies.restart import RestartPolicy
from hanode.pool.lifecycle import StandbyMode
from hanode.settings.reader import Table
from hanode.settings.schema import setting, settings
from hanode.settings.value_checks import period

# A systemd unit name (no option-like leading "-"); systemctl also gets "--" before it.
UNIT_RE = re.compile(r"[A-Za-z0-9_.:@\\][A-Za-z0-9_.:@\\-]*")


@dataclass(frozen=True, slots=True)
@settings
class RecoveryConfig:
    backoff_base_s: float = setting(
        "delay before restarting a failed replica; it doubles per failure in a row",
        gt=0,
        to=RestartPolicy,
    )
    backoff_max_s: float = setting("the longest delay between restarts", gt=0, to=RestartPolicy)
    backoff_jitter: float = setting(
        "up to this fraction of each delay is taken off at random (at most 0.5 keeps the "
        "delays growing)",
        ge=0,
        le=0.5,
        to=RestartPolicy,
    )
    crash_loop_restarts: int = setting(
        "this many restarts within crash_loop_window_s, and the next failure stops the "
        "restarts until hanodectl restart NAME",
        ge=1,
        to=RestartPolicy,
    )
    crash_loop_window_s: float = setting(
        "the window restarts are counted in", gt=0, to=RestartPolicy
    )
    poll_interval_s: float = setting(
        "how often each supervised process is looked at", gt=0, check=period, to=SupervisorSettings
    )
    start_timeout_s: float = setting(
        "a started replica that has not passed L2 by then is restarted (models take minutes "
        "to load)",
        gt=0,
        to=SupervisorSettings,
    )
    stop_grace_s: float = setting(
        'a stop sends SIGTERM, then SIGKILL after this (actuator = "command")',
        ge=0,
        to=SupervisorSettings,
    )
    engine_timeout_s: float = setting(
        "the longest one sleep, wake or warm-up call to an engine may take",
        gt=0,
        check=period,
        to=SupervisorSettings,
    )


def check_recovery(t: Table, cfg: RecoveryConfig) -> RecoveryConfig:
    if cfg.backoff_base_s > cfg.backoff_max_s and not t.bad & {"backoff_base_s", "backoff_max_s"}:
        t.error("backoff_base_s", "must not exceed backoff_max_s", mark_bad=False)
    return cfg


def check_actuation(
    t: Table,
    actuator: str,
    command: tuple[str, ...],
    unit: str | None,
    standby: StandbyMode,
    engine: str,
) -> None:
    """The [[replicas]] actuator keys together: each mistake in one line, naming the key."""
    bad = t.bad
    if "actuator" in bad:
        return
    if actuator == "command":
        if not command and "command" not in bad:
            t.error(
                "command",
                'actuator = "command" needs command = ["program", "arg", ...] (what to run)',
            )
        elif command and not command[0].strip():
            t.error("command", "the first item (the program) must not be empty")
    elif command and "command" not in bad:
        t.error("command", 'is only used with actuator = "command"')
    if actuator == "systemd":
        if not unit and "unit" not in bad:
            t.error("unit", 'actuator = "systemd" needs unit = "NAME.service"')
    elif unit and "unit" not in bad:
        t.error("unit", 'is only used with actuator = "systemd"')
    if unit and "unit" not in bad and not UNIT_RE.fullmatch(unit):
        t.error("unit", f"{unit!r} is not a systemd unit name")
    if "standby" in bad or standby is StandbyMode.HOT:
        return
    if actuator == "none":
        t.error(
            "standby",
            f'standby = "{standby.value}" needs an actuator ("command" or "systemd") to put '
            "the replica there and bring it back",
        )
    elif standby is StandbyMode.SLEEP and engine not in SLEEP_ENGINES:
        t.error(
            "standby",
            f'standby = "sleep" needs an engine with a sleep mode ({", ".join(SLEEP_ENGINES)}), '
            f"not {engine}",
        )
