"""hanodectl reload / reload --status / reload --abort against the control backend, an
in-memory store and a real front door; the runtime's rollout listeners (the metrics)."""

from __future__ import annotations

import pytest

from hanode.api.control import ControlError, ControlErrorCode
from hanode.cluster.backend import ClusterControl
from hanode.cluster.document import Doc
from tests.unit.cluster.fake_store import FakeStore
from tests.unit.cluster.test_backend import code_of, with_control
from tests.unit.cluster.test_backend_recovery import recovery_doc


def rollout_doc4(actuated_only: bool = True) -> Doc:
    doc = recovery_doc(protocol=4)
    if actuated_only:
        del doc["replicas"]["plain"]
    return doc


def test_reload_starts_one_rollout_and_repeating_it_answers_the_same() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        ro = await control.reload("m", max_unavailable=1, drain_timeout_s=5.0)
        assert ro["state"] == "running" and [r["name"] for r in ro["replicas"]] == ["r0", "r1"]
        assert [r["step"] for r in ro["replicas"]] == ["waiting", "waiting"]
        again = await control.reload("m")  # an unknown outcome repeated: the same rollout
        assert again["id"] == ro["id"]
        assert [s["op"] for s in store.submitted].count("start_rollout") == 1
        assert control.reload_status("m")[0]["id"] == ro["id"]
        assert control.reload_status()[0]["model"] == "m"
        aborted = await control.abort_reload("m")
        assert aborted["state"] == "aborted" and "aborted by operator" in aborted["reason"]
        with pytest.raises(ControlError) as err:
            await control.abort_reload("m")
        assert code_of(err) is ControlErrorCode.FAILED_PRECONDITION
        fresh = await control.reload("m")
        assert fresh["id"] != ro["id"]

    with_control(test, FakeStore(rollout_doc4()))


def test_reload_refusals_are_one_line_each() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        with pytest.raises(ControlError) as err:
            await control.reload("m")
        assert code_of(err) is ControlErrorCode.FAILED_PRECONDITION
        assert "'plain' has no actuator" in str(err.value)
        with pytest.raises(ControlError) as err:
            await control.reload("m", surge=True)
        assert "--surge needs an enabled standby" in str(err.value)
        with pytest.raises(ControlError) as err:
            await control.reload("nope")
        assert code_of(err) is ControlErrorCode.NOT_FOUND
        with pytest.raises(ControlError) as err:
            control.reload_status("nope")
        assert code_of(err) is ControlErrorCode.NOT_FOUND
        assert control.reload_status("m") == []
        with pytest.raises(ControlError) as err:
            await control.reload("m", max_unavailable=0)
        assert code_of(err) is ControlErrorCode.INVALID

    with_control(test, FakeStore(rollout_doc4(actuated_only=False)))


def test_reload_needs_every_member_on_protocol_4() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        with pytest.raises(ControlError) as err:
            await control.reload("m")
        assert code_of(err) is ControlErrorCode.FAILED_PRECONDITION
        assert "protocol 4" in str(err.value)
        assert store.submitted == [] or all(s["op"] != "start_rollout" for s in store.submitted)

    with_control(test, FakeStore(recovery_doc(protocol=3)))


def test_an_ended_rollout_reaches_the_listeners_once() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        seen: list[tuple[str, str]] = []
        control.runtime.listen_rollouts(lambda ro: seen.append((ro.id, ro.state)))
        ro = await control.reload("m")
        assert seen == []
        await control.abort_reload("m")
        control.runtime._on_view(store.view)  # a later view: not announced again
        assert seen == [(ro["id"], "aborted")]

    with_control(test, FakeStore(rollout_doc4()))
