"""hanodectl restart / sleep / wake / incidents against the control backend, an in-memory
store and a real front door; the runtime's recovery glue (registration, MTTR listeners)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hanode.api.control import ControlError, ControlErrorCode
from hanode.cluster.backend import ClusterControl
from hanode.cluster.document import Doc, empty_doc
from hanode.cluster.runtime import ClusterRuntime
from hanode.cluster.state import apply
from hanode.cluster.view import IncidentRecord
from hanode.events import EventLog
from hanode.policies.weights import WeightThresholds
from hanode.pool.lifecycle import ActuatorSpec, Desired, StandbyMode
from tests.unit.cluster.fake_store import FakeStore
from tests.unit.cluster.helpers import spec
from tests.unit.cluster.test_backend import code_of, with_control
from tests.unit.cluster.test_runtime import config


def recovery_doc(protocol: int = 3) -> Doc:
    doc = empty_doc()
    for node in ("n1", "n2"):
        apply(doc, {"op": "register_node", "name": node, "raft": f"h:{node}",
                    "protocol": protocol, "ts": 1.0})  # fmt: skip
    for name, actuated in (("r0", True), ("r1", True), ("plain", False)):
        raw = {**spec(name, node="n2"), "actuated": actuated}
        apply(doc, {"op": "register_replica", "spec": raw, "ts": 1.0})
        apply(doc, {"op": "observe", "replica": name, "obs": {"level": 3}, "ts": 1.0})
    return doc


def refused(err: pytest.ExceptionInfo[ControlError], text: str) -> None:
    assert code_of(err) is ControlErrorCode.FAILED_PRECONDITION and text in str(err.value)


def test_restart_is_idempotent_until_the_node_has_carried_it_out() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        assert await control.restart("r0") == 1
        assert await control.restart("r0") == 1  # a repeat after an unknown outcome
        assert store.view.replicas["r0"].restart_gen == 1
        report = {"op": "report_process", "replica": "r0", "node": "n2", "state": "starting",
                  "restart_done": 1, "ts": 2.0, "v": 3}  # fmt: skip
        store.apply_now(report)
        assert await control.restart("r0") == 2  # a new one once the first was done
        with pytest.raises(ControlError) as err:
            await control.restart("plain")
        refused(err, "has no actuator")
        with pytest.raises(ControlError) as err:
            await control.restart("ghost")
        assert code_of(err) is ControlErrorCode.NOT_FOUND

    with_control(test, FakeStore(recovery_doc()))


def test_sleep_has_the_drain_precondition_and_wake_undoes_it() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        await control.sleep("r0")
        rec = store.view.replicas["r0"]
        assert rec.desired is Desired.SLEEP and rec.desired_by == "operator"
        store.apply_now({"op": "observe", "replica": "plain", "obs": {"level": 0}, "ts": 3.0})
        with pytest.raises(ControlError) as err:
            await control.sleep("r1")  # the last serving replica of m
        refused(err, "would leave m with no serving replica")
        with pytest.raises(ControlError) as err:
            await control.restart("r1")
        refused(err, "restarting r1 would leave m")
        await control.sleep("r1", force=True)
        assert store.view.replicas["r1"].desired is Desired.SLEEP
        await control.wake("r1")
        assert store.view.replicas["r1"].desired is Desired.RUN
        assert [i for i in control.incidents()] == []

    with_control(test, FakeStore(recovery_doc()))


def test_recovery_commands_wait_for_every_member_on_protocol_3() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        for call in (control.restart("r0"), control.sleep("r0"), control.wake("r0")):
            with pytest.raises(ControlError) as err:
                await call
            refused(err, "need every member on protocol 3")
        assert not any(c["op"] in ("request_restart", "set_desired") for c in store.submitted)

    with_control(test, FakeStore(recovery_doc(protocol=2)))


def test_incidents_are_listed_with_their_timeline() -> None:
    async def test(control: ClusterControl, store: FakeStore) -> None:
        store.apply_now({"op": "claim_leader", "node": "n1", "term": 2, "ts": 1.0, "v": 2})
        fence = {"term": 2, "leader": "n1", "v": 3}
        store.apply_now({"op": "open_incident", "replica": "r0", "model": "m", "want": 1,
                         "reason": "r0 DOWN", "ts": 10.0, **fence})  # fmt: skip
        store.apply_now({"op": "note_incident", "id": "r0#1", "key": "restored",
                         "what": "standby_serving", "message": "r1 serving", "restored": True,
                         "ts": 12.5, **fence})  # fmt: skip
        (inc,) = control.incidents()
        assert inc["id"] == "r0#1" and inc["open"] and inc["mttr_s"] == 2.5
        assert [s["what"] for s in inc["timeline"]] == ["detected", "standby_serving"]

    with_control(test, FakeStore(recovery_doc()))


def test_registration_replicates_the_standby_mode_but_never_the_command() -> None:
    async def go() -> None:
        store = FakeStore(recovery_doc())
        runtime = ClusterRuntime(config(), store, WeightThresholds(), EventLog())

        class Sup:
            def names(self) -> tuple[str, ...]:
                return ("own-0",)

            def set_desired(self, name: str, desired: Desired) -> None:
                pass

            async def restart(self, name: str) -> None:
                pass

            def observed(self) -> dict[str, Any]:
                return {}

            def subscribe(self, listener: Any) -> None:
                pass

        secret = ("/opt/vllm", "serve", "--api-key", "hunter2")
        runtime.attach_supervisor(
            Sup(),
            {"own-0": ActuatorSpec("own-0", "command", secret, standby=StandbyMode.SLEEP)},
        )
        await runtime._register({"raft": "10.9.0.1:7001"})
        reg = next(c for c in store.submitted if c["op"] == "register_replica")
        assert reg["spec"]["actuated"] is True and reg["spec"]["standby"] == "sleep"
        assert "hunter2" not in repr(store.doc) and "/opt/vllm" not in repr(store.doc)
        seen: list[IncidentRecord] = []
        runtime.listen_incidents(seen.append)
        store.apply_now({"op": "claim_leader", "node": "n1", "term": 2, "ts": 1.0, "v": 2})
        fence = {"term": 2, "leader": "n1", "v": 3}
        now = time.time()
        store.apply_now({"op": "open_incident", "replica": "r0", "model": "m", "want": 1,
                         "ts": now, **fence})  # fmt: skip
        note = {"op": "note_incident", "id": "r0#1", "key": "restored", "restored": True,
                "ts": now + 1.5, **fence}  # fmt: skip
        store.apply_now(note)
        store.publish()
        assert [i.mttr_s for i in seen] == [1.5]  # once, however many views follow

    asyncio.run(go())
