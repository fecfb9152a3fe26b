"""Fakes for driving the front door and the relay without a daemon: a pool view whose snapshot
the test publishes, a responder that records what the client would see, a traffic observer,
and scriptable replicas on 127.0.0.1 (real sockets, so the upstream pool runs unchanged)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from hanode.http.request import Request
from hanode.http.responder import Responder
from hanode.metrics.registry import NodeMetrics
from hanode.policies.retry import RetryPolicy
from hanode.pool.replica import AdminState, HealthLevel, Observation, ReplicaSpec, Role
from hanode.pool.snapshot import PoolSnapshot, ReplicaState
from hanode.router.frontdoor import FrontDoor, RouterSettings

MODEL = "m"
ANSWER = orjson.dumps(
    {"object": "chat.completion", "choices": [{"message": {"content": "hello"}, "index": 0}]}
)


def state(
    name: str,
    port: int,
    *,
    level: HealthLevel = HealthLevel.HEALTHY,
    weight: float | None = None,
    admin: AdminState = AdminState.ENABLED,
    role: Role = Role.ACTIVE,
    gpu_removed: bool = False,
) -> ReplicaState:
    if weight is None:
        serving = level.serving and admin is AdminState.ENABLED and role is Role.ACTIVE
        weight = 1.0 if serving and not gpu_removed else 0.0
    spec = ReplicaSpec(name, MODEL, f"http://127.0.0.1:{port}", engine="vllm")
    return ReplicaState(
        spec, role, admin, Observation(level=level, gpu_removed=gpu_removed), weight
    )


class FakeView:
    """PoolView whose snapshot the test replaces, as a pool owner does."""

    def __init__(self) -> None:
        self.snapshot = PoolSnapshot()
        self._version = 0

    def publish(self, *states: ReplicaState) -> None:
        self._version += 1
        self.snapshot = PoolSnapshot.build(self._version, {s.name: s for s in states})


class FakeResponder:
    """What the client sees. ``finished`` resolves when the response ends or is cut."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.finished: asyncio.Future[FakeResponder] = loop.create_future()
        self.first_body: asyncio.Future[None] = loop.create_future()
        self.done = False
        self.started = False
        self.aborted = False
        self.status = 0
        self.headers = b""
        self.body = b""
        self.head_only = False
        self.corked: list[bytes] | None = None  # never corked: writes are seen at once
        self._on_abort: list[Callable[[], None]] = []

    @property
    def as_responder(self) -> Responder:
        return cast(Responder, self)

    def header(self, name: bytes) -> bytes | None:
        for line in self.headers.split(b"\r\n"):
            key, _, value = line.partition(b": ")
            if key.lower() == name:
                return value
        return None

    def send(
        self,
        status: int,
        body: bytes = b"",
        content_type: bytes = b"application/json",
        extra_headers: bytes = b"",
    ) -> None:
        if self.started or self.done:
            return
        self.started = True
        self.status, self.body, self.headers = status, body, extra_headers
        self._finish()

    def start(
        self,
        status: int,
        content_type: bytes = b"text/event-stream",
        extra_headers: bytes = b"",
        content_length: int | None = None,
    ) -> None:
        if self.started or self.done:
            return
        self.started = True
        self.status, self.headers = status, extra_headers

    def write(self, data: bytes) -> None:
        if self.done or not data:
            return
        self.body += data
        if not self.first_body.done():
            self.first_body.set_result(None)

    def end(self) -> None:
        if not self.done:
            self._finish()

    def cork(self) -> None:
        pass

    def uncork(self) -> None:
        pass

    def abort(self) -> None:
        if self.done:
            return
        self.done = self.aborted = True
        self._on_abort = []
        if not self.finished.done():
            self.finished.set_result(self)

    def on_abort(self, callback: Callable[[], None]) -> None:
        self._on_abort.append(callback)

    def set_flow_control(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        pass

    def client_leaves(self) -> None:
        """The client hangs up before the response ended."""
        callbacks, self._on_abort = self._on_abort, []
        self.done = True
        for cb in callbacks:
            cb()
        if not self.finished.done():
            self.finished.set_result(self)

    def _finish(self) -> None:
        self.done = True
        self._on_abort = []
        if not self.finished.done():
            self.finished.set_result(self)


@dataclass
class Sample:
    replica: str
    ok: bool
    latency_s: float
    ttft_s: float | None
    tpot_s: float | None = None


@dataclass
class FakeObserver:
    samples: list[Sample] = field(default_factory=list)

    def record(
        self,
        replica: str,
        ok: bool,
        latency_s: float,
        ttft_s: float | None,
        now: float,
        tpot_s: float | None = None,
    ) -> None:
        self.samples.append(Sample(replica, ok, latency_s, ttft_s, tpot_s))

    def of(self, replica: str, ok: bool) -> list[Sample]:
        return [s for s in self.samples if s.replica == replica and s.ok is ok]


def chat_request(stream: bool = False, timeout_s: float | None = None) -> Request:
    body = orjson.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    )
    headers = {b"content-type": b"application/json"}
    if timeout_s is not None:
        headers[b"x-hanode-timeout"] = str(timeout_s).encode()
    return Request(b"POST", b"/v1/chat/completions", headers, body, True, None)


# -- scriptable replicas -----------------------------------------------------------------------
class Call:
    """One request as the fake replica got it; ``release`` lets a held answer go."""

    def __init__(self, body: bytes, writer: asyncio.StreamWriter) -> None:
        self.body = body
        self.writer = writer
        self.release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def let_go(self) -> None:
        if not self.release.done():
            self.release.set_result(None)


Behaviour = Callable[[Call], Awaitable[bool]]  # returns False to close the connection


def respond(status: int = 200, body: bytes = ANSWER, headers: bytes = b"") -> Behaviour:
    async def go(call: Call) -> bool:
        call.writer.write(
            b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
            % (status, len(body), headers, body)
        )
        await call.writer.drain()
        return True

    return go


def hold(then: Behaviour | None = None) -> Behaviour:
    """Answer nothing until the test lets the call go (or the router hangs up)."""

    async def go(call: Call) -> bool:
        await asyncio.wait([call.release, call.gone], return_when=asyncio.FIRST_COMPLETED)
        if not call.release.done():
            return False  # the router hung up
        return await (then or respond())(call)

    return go


def stream_then_hold() -> Behaviour:
    """Start a chunked stream (the client gets its first byte), finish when let go."""

    async def go(call: Call) -> bool:
        chunk = b'data: {"choices":[{"delta":{"content":"hel"}}]}\n\n'
        call.writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(chunk), chunk)
        )
        await call.writer.drain()
        await call.release
        rest = b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\ndata: [DONE]\n\n'
        call.writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        await call.writer.drain()
        return True

    return go


def reset() -> Behaviour:
    async def go(call: Call) -> bool:
        call.writer.transport.abort()
        return False

    return go


class FakeReplica:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 that plays ``script`` in order (then
    ``default``) and queues every request in ``calls``."""

    def __init__(self, default: Behaviour | None = None) -> None:
        self.script: list[Behaviour] = []
        self.default = default or respond()
        self.calls: asyncio.Queue[Call] = asyncio.Queue()
        self.seen: list[Call] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> FakeReplica:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def next_call(self, timeout: float = 5.0) -> Call:
        return await asyncio.wait_for(self.calls.get(), timeout)

    def stop_listening(self) -> None:
        """New connections are refused; established ones go on."""
        if self.server is not None:
            self.server.close()

    async def close(self) -> None:
        self.stop_listening()
        for call in self.seen:
            call.let_go()
        for writer in list(self._writers):
            writer.transport.abort()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                call = Call(body, writer)
                self.seen.append(call)
                self.calls.put_nowait(call)
                behave = self.script.pop(0) if self.script else self.default
                watch = asyncio.ensure_future(reader.read(1))  # EOF: the router hung up
                watch.add_done_callback(lambda f, c=call: _hung_up(f, c.gone))
                keep = await behave(call)
                if not watch.done():
                    watch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watch
                elif watch.result():
                    return  # a pipelined byte: not something the router does
                if not keep or reader.at_eof():
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


def _hung_up(read: asyncio.Future[bytes], gone: asyncio.Future[None]) -> None:
    if read.cancelled() or gone.done():
        return
    if read.exception() is not None or read.result() == b"":
        gone.set_result(None)


class Rig:
    """A real front door in front of fake replicas a and b, with what tests look at."""

    def __init__(self, door: FrontDoor, view: FakeView, a: FakeReplica, b: FakeReplica) -> None:
        self.door = door
        self.view = view
        self.a = a
        self.b = b
        self.observer: FakeObserver = door.core.observer  # type: ignore[assignment]
        self.opened: list[tuple[str, str, float]] = []
        door.core.listen_breaker_opens(lambda r, cls, t: self.opened.append((r, cls, t)))

    def send(
        self, stream: bool = False, timeout_s: float | None = None, header: bytes | None = None
    ) -> FakeResponder:
        """One chat request; ``header`` carries the timeout in another header (the SDK's)."""
        request = chat_request(stream, timeout_s)
        if header is not None:
            request = Request(
                request.method,
                request.path,
                {b"content-type": b"application/json", header: str(timeout_s).encode()},
                request.body,
                True,
                None,
            )
        responder = FakeResponder()
        self.door.handle(request, responder.as_responder)
        return responder

    def publish(self, **a: object) -> None:
        self.view.publish(state("a", self.a.port, **a), state("b", self.b.port))  # type: ignore[arg-type]

    def metric(self, name: str, **labels: str) -> float:
        return self.door.metrics.registry.get_sample_value(name, labels) or 0.0

    def breaker(self, name: str) -> dict[str, object]:
        return self.door.core.breaker(name).snapshot(self.door.loop.time())


@asynccontextmanager
async def rig(*, a_port: int | None = None, **settings: Any) -> AsyncIterator[Rig]:
    """Replicas a and b; the picker always draws a first (then b when a is excluded).
    ``settings`` are RouterSettings fields; ``a_port`` points a somewhere else."""
    a = await FakeReplica().start()
    b = await FakeReplica().start()
    view = FakeView()
    view.publish(state("a", a_port or a.port), state("b", b.port))
    settings.setdefault("retry", RetryPolicy(per_try_timeout_s=30.0))
    settings.setdefault("pin_seeds", False)
    door = FrontDoor(view, RouterSettings(**settings), NodeMetrics(), FakeObserver())
    door.core._rand = lambda: 0.0
    try:
        yield Rig(door, view, a, b)
    finally:
        door.close()
        await a.close()
        await b.close()


# -- event streams (mid-stream continuation) -----------------------------------------------------
def chat_chunk(
    rid: str,
    content: str | None = None,
    *,
    role: bool = False,
    finish: str | None = None,
    index: int = 0,
    tool_call: bool = False,
) -> bytes:
    """One chat.completion.chunk event as vLLM writes it."""
    delta: dict[str, Any] = {}
    if role:
        delta = {"role": "assistant", "content": ""}
    if content is not None:
        delta["content"] = content
    if tool_call:
        delta["tool_calls"] = [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
        ]
    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
    doc = {"id": rid, "object": "chat.completion.chunk", "created": 7, "model": MODEL}
    return b"data: %s\n\n" % orjson.dumps({**doc, "choices": [choice]})


def text_chunk(rid: str, text: str, finish: str | None = None) -> bytes:
    """One /v1/completions stream event."""
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    doc = {"id": rid, "object": "text_completion", "created": 7, "model": MODEL}
    return b"data: %s\n\n" % orjson.dumps({**doc, "choices": [choice]})


def usage_chunk(rid: str, prompt: int, completion: int, chat: bool = True) -> bytes:
    obj = "chat.completion.chunk" if chat else "text_completion"
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion}  # fmt: skip
    doc = {"id": rid, "object": obj, "created": 7, "model": MODEL, "choices": [], "usage": usage}
    return b"data: %s\n\n" % orjson.dumps(doc)


def sse(events: list[bytes], then: str = "end", split: int = 0) -> Behaviour:
    """A chunked event stream of ``events``, each in its own write; ``then``: "end" (the
    chunked body ends), "reset" (the connection is reset), "stall" (silence until the router
    hangs up). ``split``: the last event is cut after that many bytes before ``then``."""

    async def go(call: Call) -> bool:
        w = call.writer
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        pieces = list(events)
        if split and pieces:
            pieces[-1] = pieces[-1][:split]
        for piece in pieces:
            w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await w.drain()
            await asyncio.sleep(0)
        if then == "reset":
            await asyncio.sleep(0.01)
            w.transport.abort()
            return False
        if then == "stall":
            await call.gone
            return False
        w.write(b"0\r\n\r\n")
        await w.drain()
        return True

    return go
