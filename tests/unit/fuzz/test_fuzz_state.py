"""Fuzzing the state machine: ``apply`` on arbitrary JSON-shaped commands either applies or
raises CommandError / IncompatibleCommand, and never corrupts the document: it stays JSON,
``freeze`` and ``digest`` work, and a refused command leaves it exactly as it was.

Bounded and deterministic (``derandomize``); found inputs are kept as ``@example``s."""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hanode.cluster.document import PROTOCOL, digest, empty_doc
from hanode.cluster.state import CommandError, IncompatibleCommand, apply
from hanode.cluster.view import freeze
from tests.unit.cluster.helpers import spec

OPS = [
    "register_node", "register_replica", "observe", "set_admin", "set_role", "set_weights",
    "open_breaker", "reset_breaker", "expire_breakers", "add_event", "forget_node",
    "claim_leader", "node_lost", "node_back", "checkpoint", "checkpoint_report", "nope",
    "set_desired", "request_restart", "report_process", "open_incident", "note_incident",
    "start_rollout", "rollout_step", "rollout_note", "finish_rollout", "abort_rollout",
    "report_inflight", "report_reload",
]  # fmt: skip
KEYS = [
    "name", "replica", "replicas", "spec", "obs", "admin", "role", "weights", "term", "leader",
    "node", "id", "digest", "ts", "v", "protocol", "raft", "open_s", "failure_class", "kind",
    "subject", "message", "fields", "by", "reason", "level", "ids",
    "desired", "gen", "state", "restart_done", "detail", "model", "want", "steps", "key", "what",
    "restored", "closed",
    "step", "how", "inflight", "done", "surge", "surge_replica", "surge_state",
    "max_unavailable", "drain_timeout_s", "waiting",
]  # fmt: skip
NAMES = st.sampled_from(
    ["r0", "r1", "n1", "n2", "ghost", "", "run", "sleep", "crash_loop", "r0#1", "planner"]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | NAMES
    | st.text(max_size=8)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
COMMANDS = st.fixed_dictionaries(
    {"op": st.sampled_from(OPS)},
    optional={k: JSON for k in KEYS},
)


def base_doc() -> dict[str, Any]:
    doc = empty_doc()
    apply(doc, {"op": "register_node", "name": "n1", "raft": "h:1", "protocol": 2, "ts": 1.0})
    apply(doc, {"op": "register_node", "name": "n2", "raft": "h:2", "protocol": 2, "ts": 1.0})
    for name in ("r0", "r1"):
        apply(doc, {"op": "register_replica", "spec": spec(name, node="n2"), "ts": 1.0})
    apply(doc, {"op": "claim_leader", "node": "n1", "term": 3, "ts": 1.0, "v": 2})
    return doc


def check_whole(doc: dict[str, Any]) -> None:
    orjson.dumps(doc)
    freeze(doc, 1, None)
    digest(doc)


@settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(COMMANDS, min_size=1, max_size=4))
# found: handlers raised ValueError / KeyError (and could stop half-way) instead of CommandError
@example([{"op": "observe", "replica": "r0", "obs": {"level": "x"}}])
@example([{"op": "set_weights", "weights": {"r0": "heavy"}, "term": 3, "leader": "n1"}])
@example([{"op": "register_replica", "spec": {"name": "r9"}}])
@example(
    [
        {"op": "open_incident", "replica": "r0", "model": "m", "term": 3, "leader": "n1",
         "ts": 2.0, "steps": [{"key": "k"}, "junk"]},
        {"op": "open_incident", "replica": "r0", "model": "m", "term": 3, "leader": "n1",
         "ts": 2.0, "want": "many"},
        {"op": "note_incident", "id": "r0#1", "key": ["x"], "term": 3, "leader": "n1",
         "ts": 3.0, "closed": True},
    ]
)  # fmt: skip
@example(
    [
        {"op": "report_process", "replica": "r0", "node": "n2", "state": "crash_loop",
         "restart_done": "x", "ts": 1.0},
        {"op": "set_desired", "replica": "r1", "desired": "sleep", "by": ["operator"],
         "ts": 1.0},
        {"op": "request_restart", "replica": "r0", "gen": 2**40, "ts": 1.0},
    ]
)  # fmt: skip
@example(
    [
        {"op": "start_rollout", "model": "m", "id": "x", "replicas": ["r0", "r1"],
         "surge_replica": "r1", "max_unavailable": "two", "ts": 1.0},
        {"op": "start_rollout", "model": "m", "id": "x", "replicas": ["r0", "r1"], "ts": 1.0},
        {"op": "rollout_step", "model": "m", "id": "x", "replica": "r0", "step": "reloading",
         "gen": "next", "term": 3, "leader": "n1", "ts": 2.0},
        {"op": "report_inflight", "model": "m", "id": "x", "replica": "r0", "node": "n2",
         "inflight": -1, "ts": 2.0},
        {"op": "rollout_note", "model": "m", "id": "x", "surge_state": "odd", "term": 3,
         "leader": "n1", "ts": 2.0},
        {"op": "finish_rollout", "model": "m", "id": "x", "state": "running", "term": 3,
         "leader": "n1", "ts": 3.0},
        {"op": "abort_rollout", "model": "m", "ts": 3.0},
    ]
)  # fmt: skip
def test_apply_applies_or_refuses_and_never_corrupts(commands: list[dict[str, Any]]) -> None:
    doc = base_doc()
    for cmd in commands:
        before = copy.deepcopy(doc)
        try:
            apply(doc, cmd, PROTOCOL)
        except (CommandError, IncompatibleCommand):
            assert doc == before, f"a refused {cmd['op']!r} changed the document"
        check_whole(doc)
