"""freeze reuses the record of a replica whose part of the document did not change, and the
view it builds is the one built from scratch, whatever the commands were."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hanode.cluster.document import Doc, empty_doc
from hanode.cluster.state import CommandError, apply
from hanode.cluster.view import _replica, freeze
from tests.unit.cluster.helpers import replica

NAMES = ("r0", "r1", "r2")


def _doc() -> Doc:
    doc = empty_doc()
    for name in NAMES:
        replica(doc, name, role="standby" if name == "r2" else "active")
    return doc


def test_an_unchanged_replica_keeps_its_record_and_a_changed_one_gets_a_new_one() -> None:
    doc = _doc()
    before = freeze(doc, 1)
    apply(doc, {"op": "observe", "replica": "r1", "obs": {"level": 2, "kv_usage": 0.9}, "ts": 5.0})
    after = freeze(doc, 2)
    assert after.replicas["r0"] is before.replicas["r0"]
    assert after.replicas["r2"] is before.replicas["r2"]
    assert after.replicas["r1"] is not before.replicas["r1"]
    assert after.replicas["r1"].observation.kv_usage == 0.9
    assert after.replicas["r1"].observed_at == 5.0


_command = st.one_of(
    st.builds(
        lambda name, level, kv, ts: {
            "op": "observe",
            "replica": name,
            "obs": {"level": level, "kv_usage": kv},
            "ts": ts,
        },
        st.sampled_from(NAMES),
        st.integers(0, 3),
        st.sampled_from([0.1, 0.5, 0.9]),
        st.sampled_from([1.0, 2.0, 3.0]),
    ),
    st.builds(
        lambda name, role: {"op": "set_role", "replica": name, "role": role, "ts": 4.0},
        st.sampled_from(NAMES),
        st.sampled_from(["active", "standby"]),
    ),
    st.builds(
        lambda name, admin: {"op": "set_admin", "replicas": [name], "admin": admin, "ts": 4.0},
        st.sampled_from(NAMES),
        st.sampled_from(["enabled", "drained", "disabled"]),
    ),
    st.builds(
        lambda name, gen: {"op": "request_restart", "replica": name, "gen": gen, "ts": 4.0},
        st.sampled_from(NAMES),
        st.integers(1, 3),
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_command, max_size=25), st.booleans())
def test_the_view_is_the_one_built_from_scratch(
    commands: list[dict[str, Any]], other: bool
) -> None:
    doc = _doc()
    if other:  # another store in the same process freezes its own document in between
        freeze(_doc(), 0)
    for i, cmd in enumerate(commands):
        with contextlib.suppress(CommandError):
            apply(doc, cmd)
        view = freeze(doc, i)
        assert dict(view.replicas) == {n: _replica(r) for n, r in doc["replicas"].items()}
