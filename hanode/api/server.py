"""The node's gRPC control API (hanode.v1.Control) on the daemon's asyncio loop (grpc.aio).

``ControlService`` translates RPCs to ``ControlBackend`` calls and back; it knows nothing about
consensus. Errors keep their meaning on the wire (see ``proto/hanode/v1/control.proto``) and
never carry a traceback: an unexpected exception is logged here and the client gets INTERNAL
with one line. Every error this service raises carries the trailing metadata
``hanode-error: <code>`` so a client can tell "the cluster said no" from "no answer".

Authentication: with tokens configured, every call except the standard grpc.health.v1 service
must carry ``authorization: Bearer <token>``, and a read-only token may only read
(``hanode.api.roles``: a write answers PERMISSION_DENIED). With TLS files the port speaks only
TLS; with a client CA it also requires a client certificate that CA signed (mTLS), checked by
gRPC before any method runs. Without tokens or client certificates the API is open (one
warning at start).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hanode._proto.hanode.v1 import control_pb2_grpc
from hanode.addresses import split_hostport
from hanode.api.control import ControlBackend, ControlError, ControlErrorCode
from hanode.api.convert import (
    breaker_to_proto,
    event_to_proto,
    incident_to_proto,
    member_to_proto,
    pb,
    rollout_to_proto,
    status_to_proto,
)
from hanode.api.credentials import server_credentials
from hanode.api.roles import Role, allows, method_needs
from hanode.security.tls import TlsFiles

__all__ = [
    "MAX_RECEIVE_BYTES",
    "MAX_SEND_BYTES",
    "ControlService",
    "start_api_server",
    "status_code_for",
]

log = structlog.get_logger("hanode.api")

T = TypeVar("T")

SERVICE_NAME = "hanode.v1.Control"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
ERROR_METADATA_KEY = "hanode-error"

MAX_RECEIVE_BYTES = 1 << 20  # requests are tiny; refuse anything over 1 MiB
MAX_SEND_BYTES = 4 << 20  # a status answer of a large cluster stays far below this
MAX_CONCURRENT_RPCS = 256  # event followers included
# Events asked of the backend per call when replaying history: more than any node holds, so
# the answer is the same whether a backend's ``limit`` keeps the oldest or the newest events.
EVENT_PAGE = 10_000
DEFAULT_INCIDENTS = 50  # ListIncidents without `last`
MAX_INCIDENTS_ANSWER = 1000
FOLLOW_QUEUE = 1024  # new events buffered per follower before it falls back to replaying

UNKNOWN_OUTCOME_MESSAGE = "outcome unknown: the command may still apply; it is safe to repeat"

_CODES: Mapping[ControlErrorCode, Any] = {
    ControlErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ControlErrorCode.INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    ControlErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ControlErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ControlErrorCode.UNKNOWN_OUTCOME: grpc.StatusCode.DEADLINE_EXCEEDED,
    ControlErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ControlErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
}


def status_code_for(code: ControlErrorCode) -> Any:
    """The gRPC status code a ControlError code travels as."""
    return _CODES[code]


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class _Abort(Exception):
    """An error to send to the client: (gRPC status code, one-line message, hanode code)."""

    def __init__(self, status: Any, message: str, tag: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = _one_line(message)
        self.tag = tag


def _invalid(message: str) -> _Abort:
    return _Abort(grpc.StatusCode.INVALID_ARGUMENT, message, ControlErrorCode.INVALID.value)


def _translate(exc: BaseException, method: str, write: bool) -> _Abort:
    if isinstance(exc, _Abort):
        return exc
    if isinstance(exc, ControlError):
        message = exc.message or str(exc)
        if exc.code is ControlErrorCode.UNKNOWN_OUTCOME:
            message = (
                f"{UNKNOWN_OUTCOME_MESSAGE} ({message})" if message else UNKNOWN_OUTCOME_MESSAGE
            )
        return _Abort(_CODES[exc.code], message, exc.code.value)
    if isinstance(exc, TimeoutError) and write:
        return _Abort(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            UNKNOWN_OUTCOME_MESSAGE,
            ControlErrorCode.UNKNOWN_OUTCOME.value,
        )
    log.error("api_internal_error", method=method, error=repr(exc), exc_info=exc)
    detail = _one_line(str(exc), 160)
    message = f"internal error in {method}: {type(exc).__name__}" + (
        f": {detail}" if detail else ""
    )
    return _Abort(grpc.StatusCode.INTERNAL, message, "internal")


async def _abort(context: Any, err: _Abort) -> None:
    await context.abort(err.status, err.message, trailing_metadata=((ERROR_METADATA_KEY, err.tag),))


def _name(value: str, what: str) -> str:
    name = value.strip()
    if not name:
        raise _invalid(f"a {what} name is required")
    if len(name) > 256 or any(ord(c) < 32 for c in name):
        raise _invalid(f"{what} name is not valid: {name[:64]!r}")
    return name


def parse_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); ValueError with a reason."""
    hp = split_hostport(value)
    return hp.host, hp.port


def _address(value: str) -> str:
    try:
        parse_address(value)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    return value.strip()


class ControlService(control_pb2_grpc.ControlServicer):
    """hanode.v1.Control on top of a ControlBackend."""

    def __init__(self, backend: ControlBackend) -> None:
        self._backend = backend

    async def _run(
        self, context: Any, method: str, write: bool, call: Callable[[], Awaitable[T]]
    ) -> T:
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            err = _translate(exc, method, write)
        await _abort(context, err)
        raise AssertionError("unreachable: context.abort returned")  # pragma: no cover

    # -------------------------------------------------------------- reads

    async def GetStatus(self, request: pb.GetStatusRequest, context: Any) -> pb.Status:
        async def call() -> pb.Status:
            return status_to_proto(self._backend.status())

        return await self._run(context, "GetStatus", False, call)

    async def ListBreakers(
        self, request: pb.ListBreakersRequest, context: Any
    ) -> pb.ListBreakersResponse:
        async def call() -> pb.ListBreakersResponse:
            return pb.ListBreakersResponse(
                breakers=[breaker_to_proto(b) for b in self._backend.breakers()]
            )

        return await self._run(context, "ListBreakers", False, call)

    async def ListMembers(
        self, request: pb.ListMembersRequest, context: Any
    ) -> pb.ListMembersResponse:
        async def call() -> pb.ListMembersResponse:
            return pb.ListMembersResponse(
                members=[member_to_proto(m) for m in self._backend.members()]
            )

        return await self._run(context, "ListMembers", False, call)

    # -------------------------------------------------------------- writes

    async def _drain(self, request: pb.DrainRequest, context: Any, undo: bool) -> pb.DrainResponse:
        method = "Undrain" if undo else "Drain"

        async def call() -> pb.DrainResponse:
            target = request.WhichOneof("target")
            if target == "replica":
                kwargs = {"replica": _name(request.replica, "replica")}
            elif target == "node":
                kwargs = {"node": _name(request.node, "node")}
            else:
                raise _invalid("name a replica or a node")
            if undo:
                affected = await self._backend.undrain(**kwargs)
            else:
                affected = await self._backend.drain(**kwargs, force=request.force)
            return pb.DrainResponse(replicas=list(affected))

        return await self._run(context, method, True, call)

    async def Drain(self, request: pb.DrainRequest, context: Any) -> pb.DrainResponse:
        return await self._drain(request, context, undo=False)

    async def Undrain(self, request: pb.DrainRequest, context: Any) -> pb.DrainResponse:
        return await self._drain(request, context, undo=True)

    async def _replica_op(
        self,
        request: pb.ReplicaRequest,
        context: Any,
        method: str,
        op: Callable[[str], Awaitable[None]],
    ) -> pb.Ack:
        async def call() -> pb.Ack:
            await op(_name(request.replica, "replica"))
            return pb.Ack()

        return await self._run(context, method, True, call)

    async def Promote(self, request: pb.ReplicaRequest, context: Any) -> pb.Ack:
        return await self._replica_op(request, context, "Promote", self._backend.promote)

    async def Demote(self, request: pb.ReplicaRequest, context: Any) -> pb.Ack:
        return await self._replica_op(request, context, "Demote", self._backend.demote)

    async def ResetBreaker(self, request: pb.ReplicaRequest, context: Any) -> pb.Ack:
        return await self._replica_op(request, context, "ResetBreaker", self._backend.reset_breaker)

    async def Restart(self, request: pb.ReplicaActionRequest, context: Any) -> pb.RestartResponse:
        async def call() -> pb.RestartResponse:
            name = _name(request.replica, "replica")
            gen = await self._backend.restart(name, force=request.force)
            return pb.RestartResponse(generation=max(0, int(gen)))

        return await self._run(context, "Restart", True, call)

    async def Sleep(self, request: pb.ReplicaActionRequest, context: Any) -> pb.Ack:
        async def call() -> pb.Ack:
            await self._backend.sleep(_name(request.replica, "replica"), force=request.force)
            return pb.Ack()

        return await self._run(context, "Sleep", True, call)

    async def Wake(self, request: pb.ReplicaActionRequest, context: Any) -> pb.Ack:
        async def call() -> pb.Ack:
            await self._backend.wake(_name(request.replica, "replica"))
            return pb.Ack()

        return await self._run(context, "Wake", True, call)

    async def ListIncidents(
        self, request: pb.ListIncidentsRequest, context: Any
    ) -> pb.ListIncidentsResponse:
        async def call() -> pb.ListIncidentsResponse:
            last = int(request.last) if request.HasField("last") else DEFAULT_INCIDENTS
            items = self._backend.incidents(min(last, MAX_INCIDENTS_ANSWER)) if last else []
            return pb.ListIncidentsResponse(incidents=[incident_to_proto(i) for i in items])

        return await self._run(context, "ListIncidents", False, call)

    async def GetSlo(self, request: pb.GetSloRequest, context: Any) -> pb.GetSloResponse:
        async def call() -> pb.GetSloResponse:
            slos = []
            for d in self._backend.slo():
                slo = pb.Slo(
                    model=d["model"],
                    request_class=d["request_class"],
                    target=d["target"],
                    requests_1h=d["requests_1h"],
                    burn=[pb.SloBurn(window=w, rate=v) for w, v in d["burn"].items()],
                    alerts=d["alerts"],
                )
                for key in ("success_rate_1h", "availability_1h", "p95_latency_s", "mttr_s"):
                    if d.get(key) is not None:
                        setattr(slo, key, d[key])
                slos.append(slo)
            return pb.GetSloResponse(node=self._backend.node_name, slos=slos)

        return await self._run(context, "GetSlo", False, call)

    async def StartReload(self, request: pb.StartReloadRequest, context: Any) -> pb.Rollout:
        async def call() -> pb.Rollout:
            model = _name(request.model, "model")
            drain = request.drain_timeout_s if request.HasField("drain_timeout_s") else None
            if drain is not None and not 0.0 <= drain <= 86400.0:
                raise _invalid("drain_timeout_s must be 0 to 86400")
            ro = await self._backend.reload(
                model, max(1, int(request.max_unavailable)), bool(request.surge), drain
            )
            return rollout_to_proto(ro)

        return await self._run(context, "StartReload", True, call)

    async def ReloadStatus(
        self, request: pb.ReloadStatusRequest, context: Any
    ) -> pb.ReloadStatusResponse:
        async def call() -> pb.ReloadStatusResponse:
            model = _name(request.model, "model") if request.HasField("model") else None
            items = self._backend.reload_status(model)
            return pb.ReloadStatusResponse(rollouts=[rollout_to_proto(r) for r in items])

        return await self._run(context, "ReloadStatus", False, call)

    async def AbortReload(self, request: pb.AbortReloadRequest, context: Any) -> pb.Rollout:
        async def call() -> pb.Rollout:
            ro = await self._backend.abort_reload(_name(request.model, "model"))
            return rollout_to_proto(ro)

        return await self._run(context, "AbortReload", True, call)

    async def AddMember(self, request: pb.MemberRequest, context: Any) -> pb.Ack:
        async def call() -> pb.Ack:
            await self._backend.add_member(_address(request.address))
            return pb.Ack()

        return await self._run(context, "AddMember", True, call)

    async def RemoveMember(self, request: pb.MemberRequest, context: Any) -> pb.Ack:
        async def call() -> pb.Ack:
            await self._backend.remove_member(_address(request.address))
            return pb.Ack()

        return await self._run(context, "RemoveMember", True, call)

    async def TransferLeader(
        self, request: pb.TransferLeaderRequest, context: Any
    ) -> pb.TransferLeaderResponse:
        async def call() -> pb.TransferLeaderResponse:
            target = _address(request.target) if request.HasField("target") else None
            new_leader = await self._backend.transfer_leader(target)
            response = pb.TransferLeaderResponse()
            if new_leader:
                response.new_leader = new_leader
            return response

        return await self._run(context, "TransferLeader", True, call)

    # -------------------------------------------------------------- events

    def _history(self, after: int) -> list[dict[str, Any]]:
        """Every event the backend still holds after ``after``, oldest first."""
        out: list[dict[str, Any]] = []
        while True:
            page = self._backend.events(after_seq=after, limit=EVENT_PAGE)
            fresh = [e for e in page if int(e["seq"]) > after]
            out.extend(fresh)
            if len(page) < EVENT_PAGE or not fresh:
                return out
            after = int(fresh[-1]["seq"])

    @staticmethod
    def _limit(
        events: list[dict[str, Any]], request: pb.StreamEventsRequest
    ) -> list[dict[str, Any]]:
        if request.HasField("last"):
            return events[-request.last :] if request.last else []
        return events

    async def StreamEvents(
        self, request: pb.StreamEventsRequest, context: Any
    ) -> AsyncIterator[pb.Event]:
        last = int(request.after_seq)
        err: _Abort | None = None
        unsubscribe: Callable[[], None] | None = None
        try:
            if not request.follow:
                for event in self._limit(self._history(last), request):
                    yield event_to_proto(event)
                return
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=FOLLOW_QUEUE)
            overflow = False

            def push(event: dict[str, Any]) -> None:
                nonlocal overflow
                if overflow:
                    return
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    overflow = True  # too slow a reader: replay from the backend's log instead

            def on_event(event: dict[str, Any]) -> None:
                try:
                    running = asyncio.get_running_loop()
                except RuntimeError:
                    running = None
                if running is loop:
                    push(event)
                else:  # defensive: the backend promises the loop, but never corrupt the queue
                    loop.call_soon_threadsafe(push, event)

            # Subscribe before reading history so nothing falls between the two.
            unsubscribe = self._backend.subscribe_events(on_event)
            pending = self._limit(self._history(last), request)
            while True:
                for event in pending:
                    seq = int(event["seq"])
                    if seq > last:
                        yield event_to_proto(event)
                        last = seq
                if overflow:
                    while not queue.empty():
                        queue.get_nowait()
                    overflow = False
                    pending = self._history(last)
                    continue
                pending = [await queue.get()]
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            err = _translate(exc, "StreamEvents", False)
        finally:
            if unsubscribe is not None:
                try:
                    unsubscribe()
                except Exception as exc:
                    log.warning("api_unsubscribe_failed", error=repr(exc))
        if err is not None:
            await _abort(context, err)


# ------------------------------------------------------------------ authentication


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class _TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without ``authorization: Bearer <token>`` (health checks exempt), and
    writes with a read-only token."""

    def __init__(self, tokens: tuple[str, ...], read_only: tuple[str, ...] = ()) -> None:
        self._digests = tuple((_digest(t), Role.ADMIN) for t in tokens) + tuple(
            (_digest(t), Role.READ_ONLY) for t in read_only if t not in tokens
        )

    def _authorized(self, metadata: Any) -> Role | None:
        """The role of the call's token, None without a valid one."""
        header = ""
        for key, value in metadata or ():
            if key.lower() == "authorization":
                header = value if isinstance(value, str) else ""
                break
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = _digest(token.strip())
        found: Role | None = None
        for digest, role in self._digests:  # constant time, and no early exit between tokens
            if hmac.compare_digest(given, digest):
                found = role
        return found

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(HEALTH_PREFIX):
            return handler
        role = self._authorized(handler_call_details.invocation_metadata)
        if role is None:
            return _deny_handler(handler)
        if not allows(role, method_needs(method)):
            name = method.rsplit("/", 1)[-1]
            return _deny_handler(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{name} needs an admin token; this token is read-only",
                ControlErrorCode.PERMISSION_DENIED.value,
            )
        return handler


_NO_TOKEN = "missing or invalid token (send metadata 'authorization: Bearer <token>')"


def _deny_handler(
    handler: Any,
    status: Any = grpc.StatusCode.UNAUTHENTICATED,
    message: str = _NO_TOKEN,
    tag: str = ControlErrorCode.UNAUTHENTICATED.value,
) -> Any:
    trailing = ((ERROR_METADATA_KEY, tag),)

    async def deny(request: Any, context: Any) -> None:
        await context.abort(status, message, trailing_metadata=trailing)

    # Same shape as the real method; requests stay raw bytes (never parsed before auth).
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


# ------------------------------------------------------------------ server


def _bind_address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
    ("grpc.max_send_message_length", MAX_SEND_BYTES),
    ("grpc.max_metadata_size", 16 * 1024),
    ("grpc.so_reuseport", 0),  # a second node on the same port must fail, not share it
    ("grpc.max_concurrent_streams", 100),  # per connection
    ("grpc.keepalive_time_ms", 60_000),  # notice dead followers of StreamEvents
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_connection_idle_ms", 15 * 60_000),
)


async def start_api_server(
    backend: ControlBackend,
    host: str,
    port: int,
    tokens: tuple[str, ...],
    read_only_tokens: tuple[str, ...] = (),
    tls: TlsFiles | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Serve hanode.v1.Control and grpc.health.v1.Health on ``host:port`` (0 = any free port)
    on the running event loop; returns the started server and the bound port.

    ``tokens`` are admin tokens, ``read_only_tokens`` may only read; ``tls`` makes the port
    TLS only, with its ``ca_file`` requiring client certificates (mTLS). Stop it with
    ``await server.stop(grace)``. Raises OSError when the address cannot be bound, ValueError
    for an empty token, and TlsError for unreadable TLS files.
    """
    if any(not t or t != t.strip() for t in (*tokens, *read_only_tokens)):
        raise ValueError("API tokens must be non-empty and have no surrounding whitespace")
    authenticated = bool(tokens or read_only_tokens)
    interceptors = [_TokenInterceptor(tokens, read_only_tokens)] if authenticated else []
    server = grpc.aio.server(
        interceptors=interceptors,
        options=list(SERVER_OPTIONS),
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    control_pb2_grpc.add_ControlServicer_to_server(ControlService(backend), server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = _bind_address(host, port)
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, server_credentials(tls))
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {_one_line(str(exc))}") from None
    if not bound:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    await health_servicer.set("", serving)
    await health_servicer.set(SERVICE_NAME, serving)
    mtls = tls is not None and tls.ca_file is not None
    if authenticated or mtls:
        log.info(
            "api_listening",
            address=_bind_address(host, bound),
            auth="+".join(a for a, on in (("bearer", authenticated), ("mtls", mtls)) if on),
            tls=tls is not None,
        )
    else:
        log.warning(
            "api_listening_without_authentication",
            address=_bind_address(host, bound),
            hint="set API tokens so only operators can drain, promote or change membership",
        )
    return server, int(bound)
