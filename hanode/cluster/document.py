"""The replicated document's vocabulary: its shape, versions, and how specs and observations
are written into it.

The document is plain JSON values (dicts, lists, str, float, bool): it is what the Raft log
replays and what the full dump pickles, so it stays version-tolerant and safe to load.

Versions:
- ``SCHEMA`` is the document's layout; :func:`upgrade_doc` brings an older layout up to date.
- ``PROTOCOL`` is what this code can apply. Each node registers it; the *cluster version* is the
  lowest protocol among the registered nodes, and a command that needs a newer protocol
  (``COMMAND_PROTOCOL``) is written only when every member speaks it, as etcd does. A node that
  meets a command it cannot apply stops applying rather than diverge (see ``raft_store``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from hanode.pool.replica import Observation, ReplicaSpec

Doc = dict[str, Any]
Command = dict[str, Any]

SCHEMA = 2
PROTOCOL = 5

# The protocol each command needs. Protocol 1 is hanode before versioning (no "v" field, wall
# clock breaker deadlines); 2 adds leader claims and fencing, node leases, and breaker opens as
# durations; 3 adds recovery: each replica's desired process state, restart requests, what
# its node observed of its process, and incidents; 4 adds rolling reloads (``rollout``); 5
# adds no command, only observation fields (``OBS_FIELDS_SINCE``).
# An op missing here is unknown to this code.
#
# Protocol 3 needs no new SCHEMA: its keys (a replica's "desired", "desired_by",
# "restart_gen", "proc"; the document's "incidents" and "incident_seq") appear only when a
# protocol-3 command writes them, and a reader takes their absence for the defaults. So a
# state written while the cluster still ran protocol 2 is the same on old and new nodes.
COMMAND_PROTOCOL: dict[str, int] = {
    "register_node": 1,
    "register_replica": 1,
    "observe": 1,
    "set_admin": 1,
    "set_role": 1,
    "set_weights": 1,
    "reset_breaker": 1,
    "add_event": 1,
    "forget_node": 1,
    "claim_leader": 2,
    "node_lost": 2,
    "node_back": 2,
    "open_breaker": 2,
    "expire_breakers": 2,
    "checkpoint": 2,
    "checkpoint_report": 2,
    "set_desired": 3,
    "request_restart": 3,
    "report_process": 3,
    "open_incident": 3,
    "note_incident": 3,
    "start_rollout": 4,
    "rollout_step": 4,
    "rollout_note": 4,
    "finish_rollout": 4,
    "abort_rollout": 4,
    "report_inflight": 4,
    "report_reload": 4,
}

RECOVERY_PROTOCOL = 3  # desired state, restarts, process reports and incidents need this
# Rolling reloads (protocol 4): the document's "rollouts" (one per model, the latest) appear
# only once a protocol-4 command writes them; no new SCHEMA, like protocol 3.
ROLLOUT_PROTOCOL = 4

OBS_FIELDS = (
    "gpu_mem_frac",
    "kv_usage",
    "queue_depth",
    "running",
    "latency_ms",
    "ttft_ms",
    "tpot_ms",
    "gpu_growth",
    "ttft_lo_ms",
    "ttft_hi_ms",
    "tpot_lo_ms",
    "tpot_hi_ms",
)
# Observation fields protocol 2 nodes do not know: they would drop them when applying an
# observe, and their state digest would differ from the others' (the divergence guard would
# resync them again and again). Sent only once every member speaks protocol 3 or later.
# Protocol 5 adds the bounds of histogram-derived TTFT/TPOT (docs/health-signals.md); without
# them a figure reads as measured, which is how protocol 4 judged it.
OBS_FIELDS_SINCE = {
    "tpot_ms": 3,
    "gpu_growth": 3,
    "ttft_lo_ms": 5,
    "ttft_hi_ms": 5,
    "tpot_lo_ms": 5,
    "tpot_hi_ms": 5,
}

MAX_EVENTS = 500
MAX_INCIDENTS = 100  # kept in the state, newest last; older ones live on in the event log
MAX_TIMELINE = 20  # entries of one incident's timeline


def empty_doc() -> Doc:
    return {
        "schema": SCHEMA,
        "nodes": {},
        "replicas": {},
        "weights": {},
        "breakers": {},
        "events": [],
        "seq": 0,
        "leader": {"node": "", "term": 0},
    }


def upgrade_doc(doc: Doc) -> Doc:
    """Bring a document of an older schema (from a dump) to ``SCHEMA``, in place."""
    if int(doc.get("schema", 1)) < 2:
        doc.setdefault("leader", {"node": "", "term": 0})
        # Protocol 1 breakers carried a wall-clock deadline of the host that opened them;
        # there is no clock-free way to carry one on, and they expire within a minute anyway.
        doc["breakers"] = {}
        doc["schema"] = 2
    return doc


def command_protocol(cmd: Command) -> float:
    """The protocol ``cmd`` needs: its op's, or its own ``v`` if higher; inf for unknown ops."""
    op = cmd.get("op")
    needed: float = COMMAND_PROTOCOL.get(op, float("inf")) if isinstance(op, str) else float("inf")
    v = cmd.get("v", 1)
    if isinstance(v, int) and not isinstance(v, bool):
        needed = max(needed, v)
    return needed


def stamp(cmd: Command) -> Command:
    """Mark ``cmd`` with the protocol it needs, so an older node refuses it loudly."""
    needed = COMMAND_PROTOCOL.get(str(cmd.get("op")), PROTOCOL)
    if needed > 1:
        cmd.setdefault("v", needed)
    return cmd


def digest(doc: Doc) -> str:
    """A short digest of the whole document: equal on every node that applied the same log."""
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def spec_doc(spec: ReplicaSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "model": spec.model,
        "url": spec.url,
        "engine": spec.engine,
        "role": spec.role.value,
        "gpu": spec.gpu,
        "node": spec.node,
    }


def observation_doc(obs: Observation) -> dict[str, Any]:
    out: dict[str, Any] = {"level": int(obs.level), "reason": obs.reason}
    for key in OBS_FIELDS:
        value = getattr(obs, key)
        if value is not None:
            out[key] = value
    if obs.gpu_removed:
        out["gpu_removed"] = True
    return out
