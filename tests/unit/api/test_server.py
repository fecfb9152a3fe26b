"""hanode.v1.Control over a real grpc.aio server on loopback, backed by an in-memory fake."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hanode._proto.hanode.v1 import control_pb2_grpc
from hanode.api import server as api_server
from hanode.api.control import ControlError, ControlErrorCode
from hanode.api.convert import pb, status_from_proto
from hanode.api.server import start_api_server
from tests.unit.api.fake import FakeBackend

Body = Callable[[Any, FakeBackend], Awaitable[None]]


def serve(body: Body, backend: FakeBackend | None = None, tokens: tuple[str, ...] = ()) -> None:
    fake = backend or FakeBackend()

    async def main() -> None:
        server, port = await start_api_server(fake, "127.0.0.1", 0, tokens)
        assert port > 0
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await body(channel, fake)
        finally:
            await server.stop(0)

    asyncio.run(main())


def stub(channel: Any) -> Any:
    return control_pb2_grpc.ControlStub(channel)


async def expect_error(call: Awaitable[Any], code: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    return info.value


# ------------------------------------------------------------------ reads


def test_get_status_round_trip() -> None:
    async def body(channel: Any, fake: FakeBackend) -> None:
        msg = await stub(channel).GetStatus(pb.GetStatusRequest())
        assert msg.node == "n1" and msg.leader == "n1"
        assert [n.name for n in msg.nodes] == ["n1", "n2"]
        assert msg.nodes[0].reachable is True and not msg.nodes[1].HasField("reachable")
        assert msg.freshness.has_quorum and msg.freshness.commit_index == 42
        r1, r2, r3 = msg.replicas
        assert (r1.name, r1.role, r1.admin, r1.health_level) == ("r1", "active", "enabled", 3)
        assert r2.gpu_mem == pytest.approx(0.89) and r2.weight == pytest.approx(0.25)
        assert not r1.HasField("kv_usage") and not r3.HasField("gpu_mem")
        assert r3.breaker_state == "open" and r3.breaker_failure_class == "connection"
        assert msg.recent_events[0].fields["level"] == "down"

        doc = status_from_proto(msg)
        assert doc["leader"] == "n1"
        assert doc["models"] == {"llama-8b": {"replicas_serving": 2}}
        assert doc["version"] == 7
        assert doc["events"][0]["fields"] == {"level": "down", "n": 3}  # ints come back as ints
        want = fake.status()["replicas"]
        for got, expected in zip(doc["replicas"], want, strict=True):
            for key in ("name", "node", "model", "url", "engine", "role", "admin", "health"):
                assert got[key] == expected[key]
            assert got["gpu_mem"] == expected["gpu_mem"]
            assert got["kv_usage"] is None
            assert got["breaker"]["state"] == expected["breaker"]["state"]

    serve(body)


def test_no_leader_is_empty_and_none_on_the_client() -> None:
    fake = FakeBackend()
    fake.leader = None

    async def body(channel: Any, fake: FakeBackend) -> None:
        msg = await stub(channel).GetStatus(pb.GetStatusRequest())
        assert msg.leader == ""
        assert status_from_proto(msg)["leader"] is None

    serve(body, fake)


def test_list_breakers_and_members() -> None:
    async def body(channel: Any, fake: FakeBackend) -> None:
        breakers = (await stub(channel).ListBreakers(pb.ListBreakersRequest())).breakers
        assert [(b.replica, b.state, b.source) for b in breakers] == [
            ("r3", "open", "cluster"),
            ("r2", "half_open", "local"),
        ]
        assert breakers[0].until == pytest.approx(1.9e9) and not breakers[1].HasField("until")
        members = (await stub(channel).ListMembers(pb.ListMembersRequest())).members
        assert [(m.address, m.is_self, m.is_leader) for m in members] == [
            ("10.0.0.1:9300", True, True),
            ("10.0.0.2:9300", False, False),
        ]

    serve(body)


# ------------------------------------------------------------------ writes


def test_drain_undrain_replica_and_node() -> None:
    async def body(channel: Any, fake: FakeBackend) -> None:
        s = stub(channel)
        assert list((await s.Drain(pb.DrainRequest(replica="r1"))).replicas) == ["r1"]
        assert fake.replicas["r1"]["admin"] == "drained"
        assert list((await s.Drain(pb.DrainRequest(node="n2"))).replicas) == ["r2", "r3"]
        assert list((await s.Undrain(pb.DrainRequest(node="n2"))).replicas) == ["r2", "r3"]
        assert fake.replicas["r2"]["admin"] == "enabled"
        await expect_error(s.Drain(pb.DrainRequest()), grpc.StatusCode.INVALID_ARGUMENT)
        await expect_error(s.Drain(pb.DrainRequest(replica=" ")), grpc.StatusCode.INVALID_ARGUMENT)
        err = await expect_error(
            s.Drain(pb.DrainRequest(replica="nope")), grpc.StatusCode.NOT_FOUND
        )
        assert "nope" in (err.details() or "")
        assert ("hanode-error", "not_found") in tuple(err.trailing_metadata() or ())

    serve(body)


def test_promote_demote_reset_breaker() -> None:
    async def body(channel: Any, fake: FakeBackend) -> None:
        s = stub(channel)
        await s.Promote(pb.ReplicaRequest(replica="r3"))
        assert fake.replicas["r3"]["role"] == "active"
        await s.Demote(pb.ReplicaRequest(replica="r3"))
        await s.Demote(pb.ReplicaRequest(replica="r2"))
        err = await expect_error(
            s.Demote(pb.ReplicaRequest(replica="r1")), grpc.StatusCode.FAILED_PRECONDITION
        )
        assert "last active" in (err.details() or "")
        await s.ResetBreaker(pb.ReplicaRequest(replica="r3"))
        assert fake.replicas["r3"]["breaker"] == {"state": "closed"}
        await expect_error(
            s.Promote(pb.ReplicaRequest(replica="")), grpc.StatusCode.INVALID_ARGUMENT
        )
        await expect_error(
            s.ResetBreaker(pb.ReplicaRequest(replica="x")), grpc.StatusCode.NOT_FOUND
        )

    serve(body)


def test_membership_and_leader_transfer() -> None:
    async def body(channel: Any, fake: FakeBackend) -> None:
        s = stub(channel)
        await s.AddMember(pb.MemberRequest(address="10.0.0.3:9300"))
        assert ("add_member", "10.0.0.3:9300") in fake.calls
        await s.RemoveMember(pb.MemberRequest(address="10.0.0.3:9300"))
        await expect_error(
            s.RemoveMember(pb.MemberRequest(address="10.0.0.3:9300")), grpc.StatusCode.NOT_FOUND
        )
        for bad in ("", "host", "host:0", "host:99999", ":9300", "http://h:1/x"):
            await expect_error(
                s.AddMember(pb.MemberRequest(address=bad)), grpc.StatusCode.INVALID_ARGUMENT
            )
        answer = await s.TransferLeader(pb.TransferLeaderRequest())
        assert answer.new_leader == "n2"
        answer = await s.TransferLeader(pb.TransferLeaderRequest(target="10.0.0.2:9300"))
        assert not answer.HasField("new_leader")
        assert ("transfer_leader", "10.0.0.2:9300") in fake.calls
        await expect_error(
            s.TransferLeader(pb.TransferLeaderRequest(target="nope")),
            grpc.StatusCode.INVALID_ARGUMENT,
        )

    serve(body)


# ------------------------------------------------------------------ error mapping


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ControlErrorCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND),
        (ControlErrorCode.INVALID, grpc.StatusCode.INVALID_ARGUMENT),
        (ControlErrorCode.FAILED_PRECONDITION, grpc.StatusCode.FAILED_PRECONDITION),
        (ControlErrorCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE),
        (ControlErrorCode.UNKNOWN_OUTCOME, grpc.StatusCode.DEADLINE_EXCEEDED),
        (ControlErrorCode.UNAUTHENTICATED, grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_control_error_codes(code: ControlErrorCode, status: Any) -> None:
    fake = FakeBackend()
    fake.fail["drain"] = ControlError(code, "the reason")
    fake.fail["status"] = ControlError(code, "the reason")

    async def body(channel: Any, fake: FakeBackend) -> None:
        err = await expect_error(stub(channel).Drain(pb.DrainRequest(replica="r1")), status)
        details = err.details() or ""
        assert "the reason" in details
        if code is ControlErrorCode.UNKNOWN_OUTCOME:
            assert details.startswith("outcome unknown: the command may still apply")
            assert "safe to repeat" in details
        assert ("hanode-error", code.value) in tuple(err.trailing_metadata() or ())
        await expect_error(stub(channel).GetStatus(pb.GetStatusRequest()), status)

    serve(body, fake)


def test_unexpected_exception_is_one_line_internal() -> None:
    fake = FakeBackend()
    fake.fail["status"] = RuntimeError("boom\nsecond line")
    fake.fail["events"] = KeyError("k")

    async def body(channel: Any, fake: FakeBackend) -> None:
        with structlog.testing.capture_logs() as logs:
            err = await expect_error(
                stub(channel).GetStatus(pb.GetStatusRequest()), grpc.StatusCode.INTERNAL
            )
        details = err.details() or ""
        assert "\n" not in details and "Traceback" not in details
        assert "RuntimeError" in details and "GetStatus" in details
        assert any(entry["event"] == "api_internal_error" for entry in logs)
        call = stub(channel).StreamEvents(pb.StreamEventsRequest())
        await expect_error(call.read(), grpc.StatusCode.INTERNAL)

    serve(body, fake)


def test_status_code_for_covers_every_control_error_code() -> None:
    for code in ControlErrorCode:
        assert api_server.status_code_for(code) is not None


# ------------------------------------------------------------------ events


def test_stream_events_history_after_seq() -> None:
    fake = FakeBackend()
    for i in range(450):
        fake.add_event("test", f"s{i}", f"event {i}")

    async def body(channel: Any, fake: FakeBackend) -> None:
        seqs = [e.seq async for e in stub(channel).StreamEvents(pb.StreamEventsRequest())]
        assert seqs == list(range(1, 452))
        call = stub(channel).StreamEvents(pb.StreamEventsRequest(after_seq=449))
        assert [e.seq async for e in call] == [450, 451]
        assert fake.subscribed == 0  # no follow, no subscription
        call = stub(channel).StreamEvents(pb.StreamEventsRequest(after_seq=10, last=3))
        assert [e.seq async for e in call] == [449, 450, 451]
        call = stub(channel).StreamEvents(pb.StreamEventsRequest(last=0))
        assert [e.seq async for e in call] == []

    serve(body, fake)


def test_stream_events_follow_gets_new_events_and_unsubscribes() -> None:
    async def body(channel: Any, fake: FakeBackend) -> None:
        call = stub(channel).StreamEvents(pb.StreamEventsRequest(follow=True))
        first = await call.read()
        assert first.seq == 1
        assert fake.subscriber_count == 1
        fake.add_event("breaker", "r2", "r2 breaker opened", failure_class="timeout")
        fake.add_event("health", "r2", "r2 is healthy")
        second = await asyncio.wait_for(call.read(), 5)
        third = await asyncio.wait_for(call.read(), 5)
        assert (second.seq, second.kind, second.fields["failure_class"]) == (
            2,
            "breaker",
            "timeout",
        )
        assert third.seq == 3
        call.cancel()
        for _ in range(100):
            if fake.subscriber_count == 0:
                break
            await asyncio.sleep(0.02)
        assert fake.subscriber_count == 0

    serve(body)


def test_stream_events_follow_survives_a_full_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_server, "FOLLOW_QUEUE", 4)

    async def body(channel: Any, fake: FakeBackend) -> None:
        call = stub(channel).StreamEvents(pb.StreamEventsRequest(follow=True))
        assert (await call.read()).seq == 1
        for i in range(50):  # far more than the queue holds, before the reader runs again
            fake.add_event("test", "x", f"event {i}")
        seqs = [(await asyncio.wait_for(call.read(), 5)).seq for _ in range(50)]
        assert seqs == list(range(2, 52))  # nothing lost, nothing twice, in order
        fake.add_event("test", "x", "after")
        assert (await asyncio.wait_for(call.read(), 5)).seq == 52
        call.cancel()

    serve(body)


# ------------------------------------------------------------------ auth, health, limits


async def _health(channel: Any, service: str = "") -> Any:
    health = health_pb2_grpc.HealthStub(channel)
    return (await health.Check(health_pb2.HealthCheckRequest(service=service))).status


def test_health_check_serving() -> None:
    async def body(channel: Any, fake: FakeBackend) -> None:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await _health(channel, "hanode.v1.Control") == health_pb2.HealthCheckResponse.SERVING

    serve(body)


def test_tokens_are_enforced_except_for_health() -> None:
    good = (("authorization", "Bearer s3cret-b"),)

    async def body(channel: Any, fake: FakeBackend) -> None:
        s = stub(channel)
        for metadata in (
            (),
            (("authorization", "Bearer wrong"),),
            (("authorization", "s3cret-b"),),
        ):
            err = await expect_error(
                s.GetStatus(pb.GetStatusRequest(), metadata=metadata),
                grpc.StatusCode.UNAUTHENTICATED,
            )
            assert ("hanode-error", "unauthenticated") in tuple(err.trailing_metadata() or ())
        await expect_error(s.Drain(pb.DrainRequest(replica="r1")), grpc.StatusCode.UNAUTHENTICATED)
        assert fake.replicas["r1"]["admin"] == "enabled"  # refused before the backend saw it
        stream = s.StreamEvents(pb.StreamEventsRequest())
        await expect_error(stream.read(), grpc.StatusCode.UNAUTHENTICATED)

        assert (await s.GetStatus(pb.GetStatusRequest(), metadata=good)).node == "n1"
        other = (("authorization", "bearer token-a"),)  # any configured token, any case scheme
        assert (await s.GetStatus(pb.GetStatusRequest(), metadata=other)).node == "n1"
        events = s.StreamEvents(pb.StreamEventsRequest(), metadata=good)
        assert [e.seq async for e in events] == [1]
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING

    serve(body, tokens=("token-a", "s3cret-b"))


def test_open_without_tokens_and_warns_once() -> None:
    async def main() -> None:
        with structlog.testing.capture_logs() as logs:
            server, port = await start_api_server(FakeBackend(), "127.0.0.1", 0, ())
        try:
            warnings = [e for e in logs if e["log_level"] == "warning"]
            assert len(warnings) == 1
            assert "authentication" in warnings[0]["event"]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                assert (await stub(channel).GetStatus(pb.GetStatusRequest())).node == "n1"
        finally:
            await server.stop(0)

    asyncio.run(main())


def test_empty_token_is_refused() -> None:
    with pytest.raises(ValueError):
        asyncio.run(start_api_server(FakeBackend(), "127.0.0.1", 0, ("",)))


def test_oversized_request_is_refused() -> None:
    async def body(channel: Any, fake: FakeBackend) -> None:
        huge = pb.ReplicaRequest(replica="x" * (api_server.MAX_RECEIVE_BYTES + 10))
        await expect_error(stub(channel).Promote(huge), grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert not any(name == "promote" for name, _ in fake.calls)

    serve(body)


def test_port_in_use_is_an_oserror() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(OSError):
            asyncio.run(start_api_server(FakeBackend(), "127.0.0.1", port, ()))


class _NewestWindowBackend(FakeBackend):
    """A backend whose ``limit`` keeps the newest events (the other reading of the protocol)."""

    def events(self, after_seq: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        return super().events(after_seq, 1_000_000)[-limit:]


def test_history_is_complete_whichever_end_limit_keeps() -> None:
    fake = _NewestWindowBackend()
    for i in range(300):
        fake.add_event("test", f"s{i}", f"event {i}")

    async def body(channel: Any, fake: FakeBackend) -> None:
        call = stub(channel).StreamEvents(pb.StreamEventsRequest(after_seq=5))
        assert [e.seq async for e in call] == list(range(6, 302))

    serve(body, fake)
