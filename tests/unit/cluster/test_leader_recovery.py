"""The leader loop's recovery decisions: only once every member speaks protocol 3, fenced."""

from __future__ import annotations

import pytest

from hanode.cluster.document import Doc
from hanode.cluster.state import apply
from hanode.pool.lifecycle import Desired
from tests.unit.cluster.fake_store import FakeStore
from tests.unit.cluster.test_leader import Clock, cluster_doc, make_loop, run


def sleeping_standby_doc(protocol: int) -> Doc:
    doc = cluster_doc(protocol)
    doc["replicas"]["a-1"]["spec"].update(actuated=True, standby="sleep")
    return doc


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_lost_active_wakes_the_sleeping_standby_only_on_protocol_3(protocol: int) -> None:
    store = FakeStore(sleeping_standby_doc(protocol))
    clock = Clock()
    loop = make_loop(store, clock=clock)
    run(loop.step())  # claim
    run(loop.step())  # sees a-0 serving
    assert store.view.replicas["a-1"].desired is Desired.SLEEP
    apply(store.doc, {"op": "observe", "replica": "a-0", "obs": {"level": 0}, "ts": 9.0})
    store.publish()
    run(loop.step())
    ops = [c["op"] for c in store.submitted]
    if protocol == 2:
        assert "set_desired" not in ops and "open_incident" not in ops
        return
    wake = next(c for c in store.submitted if c["op"] == "set_desired")
    assert wake["replica"] == "a-1" and wake["desired"] == "run"
    assert (wake["term"], wake["leader"], wake["v"]) == (1, "n1", 3)
    assert store.view.replicas["a-1"].desired is Desired.RUN
    (inc,) = store.view.incidents
    assert inc.replica == "a-0" and [s.message for s in inc.timeline][1] == "woke standby a-1"
