"""A bounded fuzzer of the HTTP front door (issue 16): request lines, headers, chunked and
fixed-length bodies, JSON bodies, pipelining and byte-level mutations, fed in random pieces to
a real :class:`HttpServerProtocol` (with a fake transport) in front of a real
:class:`FrontDoor`, whose relays reach a fake replica on 127.0.0.1.

Properties, for every input: no exception escapes the protocol or the handler; what the
server wrote parses as a sequence of HTTP/1.1 responses; while the connection stays open,
every request the server took got exactly one final response; and a new connection is still
answered on ``/health`` afterwards. Deterministic (``derandomize``), a few hundred examples.
Inputs it found are kept below as ``@example`` regressions.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import httptools
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hanode.http.protocol import HttpServerProtocol
from hanode.http.request import Request
from hanode.http.server import HttpServer, ServerLimits
from hanode.metrics.registry import NodeMetrics
from hanode.router.frontdoor import FrontDoor, RouterSettings
from hanode.router.validation import RequestLimits
from tests.unit.router.fakes import FakeReplica, FakeView, state

KEY = "fuzz-key-0123456789"
LIMITS = ServerLimits(max_header_bytes=4096, max_body_bytes=64 * 1024)
EXAMPLES = 600


class _Transport:
    """Collects what the server writes; closing is immediate, as a client would see it."""

    def __init__(self, conn: _Conn) -> None:
        self.conn = conn
        self.out = bytearray()
        self.closed = False
        self.wrongs: list[str] = []  # checked after the exchange: raising here would be caught

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def write(self, data: bytes) -> None:
        if self.closed:
            self.wrongs.append("write after close")
        if data.startswith(b"HTTP/1.1 100 ") and (self.conn._current or self.conn._pending):
            self.wrongs.append("100 Continue while an earlier request is being answered")
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.conn.connection_lost, None)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Conn(HttpServerProtocol):
    """The real protocol, counting the requests it dispatches and signalling progress."""

    def __init__(self, server: HttpServer) -> None:
        super().__init__(server)
        self.dispatched = 0
        self.moved = asyncio.Event()

    def _dispatch(self, request: Request) -> None:
        self.dispatched += 1
        super()._dispatch(request)

    def response_done(self, keep_alive: bool) -> None:
        super().response_done(keep_alive)
        self.moved.set()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.moved.set()

    def settled(self) -> bool:
        t = self.transport
        return t is None or (self._current is None and not self._pending)


class _Rig:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[Exception] = []
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.replica = await FakeReplica().start()
        self.view = FakeView()
        self.view.publish(state("a", self.replica.port))
        settings_ = RouterSettings(
            api_keys=(KEY,), pin_seeds=True, limits=RequestLimits(max_json_depth=8)
        )
        self.door = FrontDoor(self.view, settings_, NodeMetrics())
        self.server = HttpServer(self.door.handle, LIMITS, self.errors.append)

    async def exchange(self, pieces: list[bytes]) -> tuple[_Conn, _Transport]:
        conn = _Conn(self.server)
        transport = _Transport(conn)
        conn.connection_made(transport)  # type: ignore[arg-type]
        for piece in pieces:
            if transport.closed:
                break
            conn.data_received(piece)  # an exception here fails the example
        for _ in range(200):  # bounded: each round waits for a response or a close
            if conn.settled():
                break
            conn.moved.clear()
            await asyncio.wait_for(conn.moved.wait(), 10)
        assert conn.settled(), "the connection never settled"
        if not transport.closed:
            transport.close()  # the client leaves
        await asyncio.sleep(0)  # connection_lost runs
        return conn, transport

    def close(self) -> None:
        self.door.close()
        self.loop.run_until_complete(self.replica.close())
        self.loop.close()


@pytest.fixture(scope="module")
def rig() -> Iterator[_Rig]:
    r = _Rig()
    yield r
    r.close()


# -- what a client sends ------------------------------------------------------------------------
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
_JSON_LEAF = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | _TEXT
_JSON = st.recursive(
    _JSON_LEAF,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_TEXT, kids, max_size=4),
    max_leaves=12,
)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]), "content": _TEXT}
)
_SOUND = st.fixed_dictionaries(  # mostly accepted: both a prompt and messages, sane fields
    {
        "model": st.sampled_from(["m", "m", "m", "other"]),
        "messages": st.lists(_MESSAGE, min_size=1, max_size=3),
        "prompt": _TEXT | st.lists(st.integers(0, 100), min_size=1, max_size=4),
    },
    optional={
        "stream": st.booleans(),
        "max_tokens": st.integers(1, 64),
        "seed": st.none() | st.integers(0, 2**31),
        "extra": _JSON,
    },
)
_INFERENCE = (
    _SOUND
    | _SOUND
    | st.fixed_dictionaries(
        {"model": st.sampled_from(["m", "m", "other", ""])},
        optional={
            "messages": st.lists(_MESSAGE, max_size=3) | _JSON,
            "prompt": _TEXT | st.lists(st.integers(0, 100), max_size=4) | _JSON,
            "stream": st.booleans() | _JSON,
            "max_tokens": st.integers(-5, 200_000) | _JSON,
            "n": st.integers(-1, 20),
            "temperature": st.floats(-1, 3) | _JSON,
            "seed": st.none() | st.integers(0, 2**31),
            "extra": _JSON,
        },
    )
)


@st.composite
def _body(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["inference"] * 6 + ["json", "brackets", "bytes", "none"]))
    if kind == "inference":
        return orjson.dumps(draw(_INFERENCE), option=orjson.OPT_NON_STR_KEYS)
    if kind == "json":
        return orjson.dumps(draw(_JSON), option=orjson.OPT_NON_STR_KEYS)
    if kind == "brackets":
        depth = draw(st.integers(1, 40))
        inner = draw(st.sampled_from([b"[", b"{", b'{"a":[', b'"[', b"["]))
        close = {b"[": b"]", b"{": b"}", b'{"a":[': b"]}", b'"[': b'"'}[inner]
        return b'{"model":"m","prompt":"x","e":' + inner * depth + close * depth + b"}"
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    return b""


_HEADER_NAMES = [
    b"host",
    b"content-type",
    b"authorization",
    b"expect",
    b"connection",
    b"x-hanode-timeout",
    b"x-stainless-timeout",
    b"x-request-id",
    b"x-hanode-seed",
    b"upgrade",
    b"x-junk",
]
_HEADER_VALUES = [
    b"x",
    b"application/json",
    b"Bearer " + KEY.encode(),
    b"bearer " + KEY.encode(),
    b"Bearer wrong",
    b"100-continue",
    b"close",
    b"keep-alive",
    b"upgrade",
    b"0.001",
    b"-1",
    b"1e9",
    b"nan",
    b"abc",
    b"",
]


def _mostly(common: st.SearchStrategy[bytes], odd: st.SearchStrategy[bytes]) -> Any:
    """``common`` nine times in ten, ``odd`` otherwise (one_of alone would pick evenly)."""
    return st.integers(0, 9).flatmap(lambda k: odd if k == 0 else common)


_HEADER = st.tuples(
    _mostly(st.sampled_from(_HEADER_NAMES), st.binary(min_size=1, max_size=8)),
    _mostly(st.sampled_from(_HEADER_VALUES), st.binary(max_size=16)),
)


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    # No HEAD: a response parser cannot tell a HEAD answer's missing body from a cut one
    # (tests/unit/http/test_server.py covers HEAD).
    method = draw(st.sampled_from([b"POST", b"POST", b"GET", b"PUT", b"OPTIONS"]))
    paths = [b"/v1/chat/completions", b"/v1/completions", b"/v1/models", b"/health", b"/nope"]
    path = draw(_mostly(st.sampled_from(paths), st.binary(min_size=1, max_size=12)))
    if draw(st.booleans()):
        query = _mostly(st.text("abc=&%+09", max_size=8).map(str.encode), st.binary(max_size=4))
        path += b"?" + draw(query).replace(b" ", b"")
    version = draw(st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/9.9"]))
    headers = [(b"host", b"x"), (b"authorization", b"Bearer " + KEY.encode())]
    headers += draw(st.lists(_HEADER, max_size=3))
    body = draw(_body())
    framing = draw(st.sampled_from(["length"] * 4 + ["chunked"] * 2 + ["wrong-length", "none"]))
    payload = b""
    if framing == "none":
        pass  # no body at all (a body here would only be garbage before the next request)
    elif framing == "length":
        headers.append((b"content-length", b"%d" % len(body)))
        payload = body
    elif framing == "wrong-length":
        headers.append((b"content-length", b"%d" % draw(st.integers(0, 2 * len(body) + 2))))
        payload = body
    elif framing == "chunked":
        headers.append((b"transfer-encoding", b"chunked"))
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=3)))
        bounds = [0, *cuts, len(body)]
        for start, end in itertools.pairwise(bounds):
            if end > start:
                payload += b"%x\r\n%s\r\n" % (end - start, body[start:end])
        payload += b"0\r\n"
        for name, value in draw(st.lists(_HEADER, max_size=2)):  # trailers
            payload += name + b": " + value + b"\r\n"
        payload += b"\r\n"
    head = method + b" " + path + b" " + version + b"\r\n"
    head += b"".join(n + b": " + v + b"\r\n" for n, v in draw(st.permutations(headers)))
    return head + b"\r\n" + payload


@st.composite
def _stream(draw: st.DrawFn) -> list[bytes]:
    data = b"".join(draw(st.lists(_request(), min_size=1, max_size=3)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 2]))):  # byte-level mutations
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip" and at < len(data):
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
        else:
            data = data[:at] + data[at + 2 :]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=4))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# -- what the server must do ----------------------------------------------------------------------
class _Responses:
    """httptools' response parser over everything the server wrote."""

    def __init__(self) -> None:
        self.final = 0
        self.informational = 0
        self.in_message = False
        self._parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.in_message = True

    def on_message_complete(self) -> None:
        self.in_message = False
        if 100 <= self._parser.get_status_code() < 200:
            self.informational += 1
        else:
            self.final += 1

    def feed(self, data: bytes) -> None:
        self._parser.feed_data(data)


def _check(rig: _Rig, pieces: list[bytes]) -> None:
    conn, transport = rig.loop.run_until_complete(rig.exchange(pieces))
    assert rig.errors == [], rig.errors
    assert transport.wrongs == [], transport.wrongs
    out = bytes(transport.out)
    responses = _Responses()
    try:
        responses.feed(out)
    except httptools.HttpParserUpgrade:  # pragma: no cover - the server never upgrades
        raise AssertionError("server answered with an upgrade") from None
    assert out == b"" or out.startswith(b"HTTP/1.1 "), out[:80]
    if not conn._last_request and conn.transport is None and responses.final < conn.dispatched:
        # Closed by the server with a request in flight: allowed only as a cut stream (abort)
        # or a protocol-level refusal; what was written still parses.
        pass
    else:
        assert not responses.in_message, out[-200:]
        assert responses.final >= conn.dispatched, (responses.final, conn.dispatched, out[:300])
        assert responses.final <= conn.dispatched + 1, (responses.final, conn.dispatched)
    # The server keeps answering.
    health_conn, health = rig.loop.run_until_complete(
        rig.exchange([b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"])
    )
    assert bytes(health.out).startswith(b"HTTP/1.1 200"), bytes(health.out)[:80]
    assert health_conn.dispatched == 1


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pieces=_stream())
@example(  # issue 16 #12: a 100 for a pipelined request inside a streamed response
    pieces=[
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer "
        + KEY.encode()
        + b'\r\ncontent-length: 57\r\n\r\n{"model":"m","messages":[{"role":"user","content":"hi"}]}'
        + b"POST /v1/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
        b"content-length: 2\r\n\r\n"
    ]
)
@example(  # issue 16 #12: a trailer authorization must not authorize
    pieces=[
        b"GET /v1/models HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        b"0\r\nauthorization: Bearer " + KEY.encode() + b"\r\n\r\n"
    ]
)
@example(pieces=[b"GET / HTTP/1.1\r\nhost: x\r\n", b"\r\n"])
@example(pieces=[b'POST /v1/completions HTTP/1.1\r\ncontent-length: 4\r\n\r\n{"a"'])
def test_front_door_fuzz(rig: _Rig, pieces: list[bytes]) -> None:
    _check(rig, pieces)
