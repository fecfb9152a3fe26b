"""Session affinity through the front door: a session's requests stay on its replica (whatever
the picker would draw) and move once, to the other, when that replica is found dead."""

from __future__ import annotations

import orjson

from hanode.http.request import Request
from hanode.policies.affinity import ranking, session_key
from tests.unit.router.fakes import MODEL, FakeResponder, Rig, rig
from tests.unit.router.test_relay import finished, run


def ask(r: Rig, session: bytes | None = None, user: str | None = None) -> FakeResponder:
    body: dict[str, object] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    if user is not None:
        body["user"] = user
    headers = {b"content-type": b"application/json"}
    if session is not None:
        headers[b"x-session-id"] = session
    resp = FakeResponder()
    r.door.handle(
        Request(b"POST", b"/v1/chat/completions", headers, orjson.dumps(body), True, None),
        resp.as_responder,
    )
    return resp


def a_session_on(replica: str) -> bytes:
    """A session id whose first replica is ``replica`` (the rig's picker always draws a)."""
    for i in range(100):
        sid = f"conv-{i}".encode()
        key = session_key(sid, None)
        assert key is not None
        if ranking(["a", "b"], [1.0, 1.0], key)[0] == replica:
            return sid
    raise AssertionError("no session id found")


def test_a_session_stays_on_its_replica_then_moves_once() -> None:
    async def main() -> None:
        async with rig() as r:
            sid = a_session_on("b")
            served = [(await finished(ask(r, sid))).header(b"x-hanode-replica") for _ in range(5)]
            assert served == [b"b"] * 5  # not a, which the picker alone would take
            r.b.stop_listening()  # b dies: its breaker opens on the refused connect
            for writer in list(r.b._writers):
                writer.transport.abort()
            served = [(await finished(ask(r, sid))).header(b"x-hanode-replica") for _ in range(5)]
            assert served == [b"a"] * 5
            assert r.breaker("b")["state"] == "open"

    run(main)


def test_the_user_field_is_a_session_too() -> None:
    async def main() -> None:
        async with rig() as r:
            user = next(
                f"user-{i}"
                for i in range(100)
                if ranking(["a", "b"], [1, 1], f"u:user-{i}")[0] == "b"
            )
            for _ in range(3):
                assert (await finished(ask(r, user=user))).header(b"x-hanode-replica") == b"b"

    run(main)
