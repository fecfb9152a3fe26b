"""The systemd actuator against a fake ``systemctl`` on PATH (there is no systemd here): the
calls it makes, what it reads from ``systemctl show``, and failures as one-line errors."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from hanode.actuators.base import ActuatorError
from hanode.actuators.systemd import SystemdUnit
from tests.unit.actuators.fakes import run_async

FAKE = r'''#!PYTHON
"""A fake systemctl: one unit's state in $FAKE_SYSTEMD/state.json, every call in calls.log."""
import json, os, sys
root = os.environ["FAKE_SYSTEMD"]
args = sys.argv[1:]
with open(os.path.join(root, "calls.log"), "a") as f:
    f.write(json.dumps(args) + "\n")
path = os.path.join(root, "state.json")
state = {"ActiveState": "inactive", "SubState": "dead", "MainPID": 0, "ExecMainStatus": 0}
if os.path.exists(path):
    state = json.load(open(path))
verb = [a for a in args if not a.startswith("-")][0]
unit = args[-1]
if os.path.exists(os.path.join(root, "fail")):
    print(f"Job for {unit} failed because the control process exited with error code.")
    sys.exit(1)
if verb == "start":
    state.update(ActiveState="active", SubState="running", MainPID=4242)
elif verb == "stop":
    state.update(ActiveState="inactive", SubState="dead", MainPID=0)
elif verb == "show":
    for key in ("ActiveState", "SubState", "MainPID", "ExecMainStatus"):
        print(f"{key}={state[key]}")
json.dump(state, open(path, "w"))
'''


@pytest.fixture
def fake_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "systemctl"
    exe.write_text(FAKE.replace("PYTHON", sys.executable, 1))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_SYSTEMD", str(tmp_path))
    return tmp_path


def calls(root: Path) -> list[list[str]]:
    return [json.loads(line) for line in (root / "calls.log").read_text().splitlines()]


def set_state(root: Path, **values: object) -> None:
    path = root / "state.json"
    state = json.loads(path.read_text())
    state.update(values)
    path.write_text(json.dumps(state))


@run_async
async def test_start_observe_stop_through_systemctl(fake_systemd: Path) -> None:
    unit = SystemdUnit("vllm@0.service")
    assert not (await unit.observe()).running
    assert await unit.adopt() == ""
    await unit.start()
    status = await unit.observe()
    assert status.running and status.pid == 4242 and status.detail == "active (running)"
    assert await unit.adopt() == "unit vllm@0.service is already active (running)"
    await unit.stop()
    assert not (await unit.observe()).running
    verbs = [c[1] for c in calls(fake_systemd)]
    assert verbs == ["show", "show", "start", "show", "show", "stop", "show"]
    # The unit comes after "--": a name can never be read as an option.
    assert all(
        c[0] == "--no-ask-password" and c[-2:] == ["--", "vllm@0.service"]
        for c in calls(fake_systemd)
    )


@run_async
async def test_a_failed_unit_reports_its_exit_status(fake_systemd: Path) -> None:
    unit = SystemdUnit("vllm@0.service")
    await unit.start()
    set_state(fake_systemd, ActiveState="failed", SubState="failed", MainPID=0, ExecMainStatus=1)
    status = await unit.observe()
    assert not status.running and status.exit_code == 1 and status.detail == "failed (failed)"


@run_async
async def test_activating_counts_as_running(fake_systemd: Path) -> None:
    unit = SystemdUnit("vllm@0.service")
    await unit.start()
    set_state(fake_systemd, ActiveState="activating", SubState="start")
    assert (await unit.observe()).running


@run_async
async def test_a_failing_systemctl_is_one_line(fake_systemd: Path) -> None:
    (fake_systemd / "fail").write_text("")
    with pytest.raises(ActuatorError) as err:
        await SystemdUnit("vllm@0.service").start()
    assert str(err.value) == (
        "systemctl start vllm@0.service: Job for vllm@0.service failed because the control "
        "process exited with error code."
    )
    assert not (await SystemdUnit("vllm@0.service").observe()).running


@run_async
async def test_no_systemctl_at_all(tmp_path: Path) -> None:
    unit = SystemdUnit("vllm@0.service", systemctl=str(tmp_path / "nope"))
    with pytest.raises(ActuatorError, match="cannot run"):
        await unit.start()
    status = await unit.observe()
    assert not status.running and "cannot run" in status.detail
