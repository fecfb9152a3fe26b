"""Fuzzing the control API's messages: every request the servicer can be sent (arbitrary
names, addresses, flags) on a fake backend ends in an answer or one of the API's own errors
(an abort with a status other than INTERNAL), and ``convert`` turns arbitrary replicated
event records (fields are any JSON a node wrote) into protos and back. Bounded, deterministic.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hanode.api.convert import event_from_proto, event_to_proto, pb
from hanode.api.server import ControlService
from tests.unit.api.fake import FakeBackend

FUZZ = settings(
    max_examples=250,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NAMES = st.sampled_from(["r1", "r2", "r3", "n1", "n2", "", " ", "ghost"]) | st.text(max_size=300)
ADDRESSES = st.sampled_from(
    ["127.0.0.1:7001", "[::1]:7001", "h:0", "h:65536", ":1", "[::1", "a b:1"]
) | st.text(max_size=40)


class Aborted(Exception):
    def __init__(self, status: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = status


class Context:
    async def abort(self, status: grpc.StatusCode, message: str, **_: Any) -> None:
        raise Aborted(status, message)


def call(method: str, request: Any) -> None:
    """One call on a fresh fake: an answer, or an abort that is not INTERNAL."""

    async def go() -> None:
        service = ControlService(FakeBackend())
        try:
            await getattr(service, method)(request, Context())
        except Aborted as exc:
            assert exc.status is not grpc.StatusCode.INTERNAL, (method, request, str(exc))
            assert exc.args[0] and "\n" not in exc.args[0]

    asyncio.run(go())


REQUESTS = st.one_of(
    st.tuples(
        st.sampled_from(["Drain", "Undrain"]),
        st.builds(lambda r, f: pb.DrainRequest(replica=r, force=f), NAMES, st.booleans())
        | st.builds(lambda n, f: pb.DrainRequest(node=n, force=f), NAMES, st.booleans())
        | st.just(pb.DrainRequest()),
    ),
    st.tuples(
        st.sampled_from(["Promote", "Demote", "ResetBreaker"]),
        st.builds(lambda r: pb.ReplicaRequest(replica=r), NAMES),
    ),
    st.tuples(
        st.sampled_from(["AddMember", "RemoveMember"]),
        st.builds(lambda a: pb.MemberRequest(address=a), ADDRESSES),
    ),
    st.tuples(
        st.just("TransferLeader"),
        st.builds(lambda a: pb.TransferLeaderRequest(target=a), ADDRESSES)
        | st.just(pb.TransferLeaderRequest()),
    ),
    st.tuples(
        st.sampled_from(["GetStatus", "ListBreakers", "ListMembers"]),
        st.just(None),
    ),
)


@FUZZ
@given(REQUESTS)
@example(("Drain", pb.DrainRequest(replica="\x00")))
@example(("AddMember", pb.MemberRequest(address="[::1]:99999")))
@example(("TransferLeader", pb.TransferLeaderRequest(target="")))
def test_every_request_ends_in_an_answer_or_an_api_error(case: tuple[str, Any]) -> None:
    method, request = case
    if request is None:
        request = {
            "GetStatus": pb.GetStatusRequest,
            "ListBreakers": pb.ListBreakersRequest,
            "ListMembers": pb.ListMembersRequest,
        }[method]()
    call(method, request)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["seq", "ts", "kind", "subject", "message", "fields", "x"]), JSON
    )
    | st.fixed_dictionaries({"fields": st.dictionaries(st.text(max_size=5), JSON)})
)
@example({"seq": -1, "ts": float("nan"), "fields": {"n": 2**70}})
@example({"seq": "7", "ts": "soon", "kind": None})
@example({"fields": True})  # found: not a mapping (TypeError)
@example({"fields": {"x": float("inf")}})  # found: Struct refuses non-finite numbers
@example({"seq": float("inf")})  # found: OverflowError
@example({"seq": 2**64})  # found: uint64 out of range
def test_event_records_convert_whatever_their_fields(event: dict[str, Any]) -> None:
    msg = event_to_proto(event)
    back = event_from_proto(pb.Event.FromString(msg.SerializeToString()))
    assert back["seq"] >= 0 and isinstance(back["fields"], dict)
    assert isinstance(back["ts"], float) and (math.isnan(back["ts"]) or back["ts"] == back["ts"])
