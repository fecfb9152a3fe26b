"""`hanodectl`: operate a hanode cluster through any node's gRPC control API.

One-line errors, never tracebacks. Exit codes: 0 done; 1 the cluster refused or failed the
command (unknown name, rule, authentication, internal error); 2 usage or configuration error;
3 the cluster did not answer (unreachable endpoint, no quorum, timeout, unknown outcome).

The endpoint and token come from ``--endpoint``/``--token``, else ``HANODE_ENDPOINT``/
``HANODE_TOKEN``, else the keys ``endpoint``/``token``/``timeout`` of
``$XDG_CONFIG_HOME/hanode/hanodectl.toml`` (``~/.config/hanode/hanodectl.toml``), else
127.0.0.1:9200 without a token. TLS the same way: ``--ca-file``/``--cert-file``/``--key-file``/
``--server-name``, ``HANODE_CA_FILE``/``HANODE_CERT_FILE``/``HANODE_KEY_FILE``/
``HANODE_SERVER_NAME``, or the keys ``ca_file``/``cert_file``/``key_file``/``server_name``; a
CA file (or a client certificate) makes the connection TLS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc

from hanode._proto.hanode.v1 import control_pb2_grpc
from hanode.addresses import split_hostport
from hanode.api.convert import (
    breaker_from_proto,
    event_from_proto,
    incident_from_proto,
    member_from_proto,
    pb,
    rollout_from_proto,
    status_from_proto,
)
from hanode.cli.render import (
    breakers_table,
    event_line,
    incidents_table,
    members_table,
    rollouts_table,
    slo_table,
    status_table,
)

DEFAULT_ENDPOINT = "127.0.0.1:9200"
TLS_KEYS = ("ca_file", "cert_file", "key_file", "server_name")
DEFAULT_TIMEOUT = 5.0
MAX_ANSWER_BYTES = 8 << 20

EXIT_OK = 0
EXIT_CLUSTER = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class CtlError(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_CLUSTER) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ------------------------------------------------------------------ settings


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hanode" / "hanodectl.toml"


def _load_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CtlError(f"{path}: {' '.join(str(exc).split())}", EXIT_USAGE) from None
    kinds: list[tuple[str, type | tuple[type, ...]]] = [
        ("endpoint", str),
        ("token", str),
        ("timeout", (int, float)),
        *((k, str) for k in TLS_KEYS),
    ]
    for key, kind in kinds:
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise CtlError(f"{path}: key '{key}' has the wrong type", EXIT_USAGE)
    return data


def _check_endpoint(endpoint: str) -> str:
    text = endpoint.strip()
    try:
        split_hostport(text)
    except ValueError as exc:
        raise CtlError(f"endpoint must be HOST:PORT: {exc}", EXIT_USAGE) from None
    return text


@dataclass(frozen=True)
class Settings:
    endpoint: str
    token: str | None
    timeout: float
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    @property
    def tls(self) -> bool:
        return bool(self.ca_file or self.cert_file)


def resolve_settings(args: argparse.Namespace) -> Settings:
    config = _load_config(config_path())
    endpoint = (
        args.endpoint
        or os.environ.get("HANODE_ENDPOINT")
        or config.get("endpoint")
        or DEFAULT_ENDPOINT
    )
    token = args.token or os.environ.get("HANODE_TOKEN") or config.get("token") or None
    timeout = args.timeout if args.timeout is not None else config.get("timeout", DEFAULT_TIMEOUT)
    if not float(timeout) > 0:
        raise CtlError("--timeout must be a positive number of seconds", EXIT_USAGE)
    tls = {
        key: getattr(args, key, None)
        or os.environ.get(f"HANODE_{key.upper()}")
        or config.get(key)
        or None
        for key in TLS_KEYS
    }
    if bool(tls["cert_file"]) != bool(tls["key_file"]):
        raise CtlError("give a client certificate and its key together", EXIT_USAGE)
    return Settings(_check_endpoint(str(endpoint)), token, float(timeout), **tls)


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CtlError(
            f"cannot read the {what} {path}: {exc.strerror or exc}", EXIT_USAGE
        ) from None


def _channel(settings: Settings, options: list[tuple[str, Any]]) -> grpc.Channel:
    if not settings.tls:
        return grpc.insecure_channel(settings.endpoint, options=options)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read_file(settings.ca_file, "CA file") if settings.ca_file else None,
        private_key=_read_file(settings.key_file, "key file") if settings.key_file else None,
        certificate_chain=(
            _read_file(settings.cert_file, "certificate file") if settings.cert_file else None
        ),
    )
    if settings.server_name:
        options = [*options, ("grpc.ssl_target_name_override", settings.server_name)]
    return grpc.secure_channel(settings.endpoint, credentials, options=options)


# ------------------------------------------------------------------ calls


def _first_line(text: str | None) -> str:
    return " ".join((text or "").split())[:300]


def _rpc_error(exc: grpc.RpcError, settings: Settings, write: bool) -> CtlError:
    """Map a failed call to one line and an exit code."""
    code = exc.code() if callable(getattr(exc, "code", None)) else grpc.StatusCode.UNKNOWN
    details = _first_line(exc.details() if callable(getattr(exc, "details", None)) else str(exc))
    trailing = exc.trailing_metadata() if callable(getattr(exc, "trailing_metadata", None)) else ()
    from_cluster = any(key == "hanode-error" for key, _ in trailing or ())
    endpoint = settings.endpoint
    C = grpc.StatusCode
    if code == C.UNAVAILABLE:
        if from_cluster:
            return CtlError(f"cluster unavailable: {details}", EXIT_UNREACHABLE)
        return CtlError(f"cannot reach hanode at {endpoint}: {details}", EXIT_UNREACHABLE)
    if code == C.DEADLINE_EXCEEDED:
        if from_cluster:
            return CtlError(details, EXIT_UNREACHABLE)
        message = f"no answer from {endpoint} within {settings.timeout:g}s"
        if write:
            message += " (outcome unknown: the command may still apply; it is safe to repeat)"
        return CtlError(message, EXIT_UNREACHABLE)
    if code == C.PERMISSION_DENIED:
        return CtlError(f"refused by {endpoint}: {details}", EXIT_CLUSTER)
    if code == C.UNAVAILABLE and settings.tls and "handshake" in details.lower():
        return CtlError(f"TLS with {endpoint} failed: {details}", EXIT_UNREACHABLE)
    if code == C.UNAUTHENTICATED:
        hint = "wrong token" if settings.token else "no token given"
        return CtlError(
            f"not authenticated by {endpoint} ({hint}; use --token or HANODE_TOKEN)", EXIT_CLUSTER
        )
    if code == C.UNIMPLEMENTED:
        return CtlError(
            f"{endpoint} does not serve this command ({details or 'unimplemented'}); is it a "
            "hanode control API port, of the same version?",
            EXIT_CLUSTER,
        )
    if code == C.CANCELLED:
        return CtlError("call cancelled", EXIT_UNREACHABLE)
    if code == C.RESOURCE_EXHAUSTED and not from_cluster:
        return CtlError(f"{endpoint}: {details}", EXIT_CLUSTER)
    return CtlError(details or f"{endpoint} answered {code.name}", EXIT_CLUSTER)


class Client:
    """A thin synchronous client; every call maps gRPC failures to CtlError."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._channel = _channel(
            settings,
            [
                ("grpc.max_receive_message_length", MAX_ANSWER_BYTES),
                ("grpc.enable_retries", 0),
            ],
        )
        self.stub = control_pb2_grpc.ControlStub(self._channel)  # type: ignore[no-untyped-call]
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {settings.token}"),) if settings.token else ()
        )

    def close(self) -> None:
        self._channel.close()

    def call(self, method: str, request: Any, write: bool = False) -> Any:
        try:
            return getattr(self.stub, method)(
                request, timeout=self.settings.timeout, metadata=self.metadata
            )
        except grpc.RpcError as exc:
            raise _rpc_error(exc, self.settings, write) from None

    def stream(self, method: str, request: Any, timeout: float | None) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, self.settings, False) from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# ------------------------------------------------------------------ commands


def _cmd_status(client: Client, args: argparse.Namespace) -> int:
    doc = status_from_proto(client.call("GetStatus", pb.GetStatusRequest()))
    if args.json:
        _print_json(doc)
    else:
        print(status_table(doc))
    return EXIT_OK


def _drain_request(args: argparse.Namespace) -> pb.DrainRequest:
    if args.node is not None:
        return pb.DrainRequest(node=args.node, force=getattr(args, "force", False))
    return pb.DrainRequest(replica=args.replica, force=getattr(args, "force", False))


def _cmd_plan(client: Client, args: argparse.Namespace) -> int:
    from hanode.cli.plan import PlanError, model_settings, plans, plans_json, plans_table

    try:
        settings = model_settings(Path(args.config) if args.config else None)
    except PlanError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    doc = status_from_proto(client.call("GetStatus", pb.GetStatusRequest()))
    items = plans(doc, settings, args.gpu_price)
    if args.json:
        _print_json(plans_json(items))
    else:
        print(plans_table(items))
    return EXIT_OK


def _cmd_drain(client: Client, args: argparse.Namespace) -> int:
    answer = client.call("Drain", _drain_request(args), write=True)
    print(f"drained: {', '.join(answer.replicas) or '(nothing to drain)'}")
    return EXIT_OK


def _cmd_undrain(client: Client, args: argparse.Namespace) -> int:
    answer = client.call("Undrain", _drain_request(args), write=True)
    print(f"undrained: {', '.join(answer.replicas) or '(nothing to undrain)'}")
    return EXIT_OK


def _cmd_promote(client: Client, args: argparse.Namespace) -> int:
    client.call("Promote", pb.ReplicaRequest(replica=args.replica), write=True)
    print(f"promoted {args.replica} to active")
    return EXIT_OK


def _cmd_demote(client: Client, args: argparse.Namespace) -> int:
    client.call("Demote", pb.ReplicaRequest(replica=args.replica), write=True)
    print(f"demoted {args.replica} to standby")
    return EXIT_OK


def _cmd_breakers(client: Client, args: argparse.Namespace) -> int:
    answer = client.call("ListBreakers", pb.ListBreakersRequest())
    breakers = [breaker_from_proto(b) for b in answer.breakers]
    if args.json:
        _print_json({"breakers": breakers})
    else:
        print(breakers_table(breakers))
    return EXIT_OK


def _cmd_reset_breaker(client: Client, args: argparse.Namespace) -> int:
    client.call("ResetBreaker", pb.ReplicaRequest(replica=args.replica), write=True)
    print(f"breaker of {args.replica} reset")
    return EXIT_OK


def _cmd_restart(client: Client, args: argparse.Namespace) -> int:
    request = pb.ReplicaActionRequest(replica=args.replica, force=args.force)
    answer = client.call("Restart", request, write=True)
    print(f"restart of {args.replica} requested (request {answer.generation})")
    return EXIT_OK


def _cmd_sleep(client: Client, args: argparse.Namespace) -> int:
    request = pb.ReplicaActionRequest(replica=args.replica, force=args.force)
    client.call("Sleep", request, write=True)
    print(f"{args.replica} goes to sleep")
    return EXIT_OK


def _cmd_wake(client: Client, args: argparse.Namespace) -> int:
    client.call("Wake", pb.ReplicaActionRequest(replica=args.replica), write=True)
    print(f"{args.replica} wakes up (traffic once L2 passes, ramping up)")
    return EXIT_OK


def _cmd_slo(client: Client, args: argparse.Namespace) -> int:
    answer = client.call("GetSlo", pb.GetSloRequest())
    slos = []
    for s in answer.slos:
        doc: dict[str, Any] = {
            "model": s.model,
            "request_class": s.request_class,
            "target": s.target,
            "requests_1h": s.requests_1h,
            "burn": {b.window: b.rate for b in s.burn},
            "alerts": list(s.alerts),
        }
        for key in ("success_rate_1h", "availability_1h", "p95_latency_s", "mttr_s"):
            doc[key] = getattr(s, key) if s.HasField(key) else None
        slos.append(doc)
    if args.json:
        _print_json({"node": answer.node, "slos": slos})
    else:
        print(slo_table(answer.node, slos))
    return EXIT_OK


def _cmd_incidents(client: Client, args: argparse.Namespace) -> int:
    request = pb.ListIncidentsRequest()
    if args.last is not None:
        request.last = args.last
    answer = client.call("ListIncidents", request)
    incidents = [incident_from_proto(i) for i in answer.incidents]
    if args.json:
        _print_json({"incidents": incidents})
    else:
        print(incidents_table(incidents))
    return EXIT_OK


def _cmd_reload(client: Client, args: argparse.Namespace) -> int:
    """Start, show or abort a rolling reload (docs/rollouts.md)."""
    if args.status:
        request = pb.ReloadStatusRequest()
        if args.model is not None:
            request.model = args.model
        answer = client.call("ReloadStatus", request)
        rollouts = [rollout_from_proto(r) for r in answer.rollouts]
        if args.json:
            _print_json({"rollouts": rollouts})
        else:
            print(rollouts_table(rollouts))
        return EXIT_OK
    if args.abort:
        ro = rollout_from_proto(
            client.call("AbortReload", pb.AbortReloadRequest(model=args.model), write=True)
        )
    else:
        request_start = pb.StartReloadRequest(
            model=args.model, max_unavailable=args.max_unavailable, surge=args.surge
        )
        if args.drain_timeout is not None:
            request_start.drain_timeout_s = args.drain_timeout
        ro = rollout_from_proto(client.call("StartReload", request_start, write=True))
    if args.json:
        _print_json({"rollout": ro})
    else:
        print(rollouts_table([ro]))
    return EXIT_OK


def _cmd_events(client: Client, args: argparse.Namespace) -> int:
    request = pb.StreamEventsRequest(after_seq=args.after, follow=args.follow)
    if args.last is not None:
        request.last = args.last
    # Following has no deadline (it ends with Ctrl-C); a one-off read has the usual timeout.
    call = client.stream("StreamEvents", request, None if args.follow else client.settings.timeout)
    timer: threading.Timer | None = None
    stopped = threading.Event()
    if args.follow and args.follow_for:

        def stop() -> None:
            stopped.set()
            call.cancel()

        timer = threading.Timer(args.follow_for, stop)
        timer.daemon = True
        timer.start()
    try:
        for msg in _iterate(call):
            event = event_from_proto(msg)
            print(json.dumps(event, sort_keys=True) if args.json else event_line(event), flush=True)
    except grpc.RpcError as exc:
        if stopped.is_set():
            return EXIT_OK
        err = _rpc_error(exc, client.settings, False)
        if args.follow and err.exit_code == EXIT_UNREACHABLE:
            raise CtlError(f"lost the event stream: {err}", EXIT_UNREACHABLE) from None
        raise err from None
    finally:
        if timer is not None:
            timer.cancel()
    return EXIT_OK


def _iterate(call: Any) -> Iterator[Any]:
    yield from call


def _cmd_members(client: Client, args: argparse.Namespace) -> int:
    answer = client.call("ListMembers", pb.ListMembersRequest())
    members = [member_from_proto(m) for m in answer.members]
    if args.json:
        _print_json({"members": members})
    else:
        print(members_table(members))
    return EXIT_OK


def _cmd_members_add(client: Client, args: argparse.Namespace) -> int:
    client.call("AddMember", pb.MemberRequest(address=args.address), write=True)
    print(f"added member {args.address}")
    return EXIT_OK


def _cmd_members_remove(client: Client, args: argparse.Namespace) -> int:
    client.call("RemoveMember", pb.MemberRequest(address=args.address), write=True)
    print(f"removed member {args.address}")
    return EXIT_OK


def _cmd_leader_transfer(client: Client, args: argparse.Namespace) -> int:
    request = pb.TransferLeaderRequest()
    if args.to:
        request.target = args.to
    answer = client.call("TransferLeader", request, write=True)
    if answer.HasField("new_leader"):
        print(f"leader is now {answer.new_leader}")
    else:
        print("leadership transfer requested (new leader not known yet; see `hanodectl status`)")
    return EXIT_OK


# ------------------------------------------------------------------ parser


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2 (argparse's own code), no usage dump."""

    def error(self, message: str) -> NoReturn:
        print(f"hanodectl: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _address_arg(value: str) -> str:
    try:
        split_hostport(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT: {exc}") from None
    return value.strip()


def _price(value: str) -> float:
    try:
        price = float(value)
    except ValueError:
        price = -1.0
    if not price >= 0:
        raise argparse.ArgumentTypeError(f"expected a price >= 0, got {value!r}")
    return price


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return int(value)


def _positive_count(value: str) -> int:
    if not value.isdigit() or int(value) < 1 or int(value) > 64:
        raise argparse.ArgumentTypeError(f"expected a whole number 1 to 64, got {value!r}")
    return int(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 86400, got {value!r}")
    return seconds


def _add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--endpoint",
        default=default,
        metavar="HOST:PORT",
        help=f"a node's control API (env HANODE_ENDPOINT; default {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--token",
        default=default,
        help="API token (prefer env HANODE_TOKEN or the config file: arguments are visible)",
    )
    parser.add_argument(
        "--timeout", type=float, default=default, help=f"seconds per call ({DEFAULT_TIMEOUT:g})"
    )
    parser.add_argument(
        "--ca-file", default=default, help="CA that signed the node's certificate (TLS)"
    )
    parser.add_argument("--cert-file", default=default, help="client certificate (mTLS)")
    parser.add_argument("--key-file", default=default, help="the client certificate's key")
    parser.add_argument(
        "--server-name", default=default, help="name to check the node's certificate against"
    )


def build_parser() -> argparse.ArgumentParser:
    common: argparse.ArgumentParser = argparse.ArgumentParser(add_help=False)
    _add_common(common, suppress=True)
    parser: argparse.ArgumentParser = _Parser(
        prog="hanodectl",
        description="Operate a hanode cluster through any node's control API.",
        epilog=f"Defaults come from {config_path()} (keys endpoint, token, timeout). "
        "Exit codes: 1 refused by the cluster, 2 usage, 3 no answer (unreachable, no quorum, "
        "timeout).",
    )
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func: Callable[[Client, argparse.Namespace], int]) -> Any:
        p = sub.add_parser(name, help=help, parents=[common])
        p.set_defaults(func=func)
        return p

    p = command("status", "nodes, leader and replicas at a glance", _cmd_status)
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    p = command("plan", "redundancy per model: cost, utilization, losing one host", _cmd_plan)
    p.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    p.add_argument(
        "--config",
        metavar="HANODE_TOML",
        help="a node's config: [[models]] redundancy and gpu_price_per_hour (else n_plus_1)",
    )
    p.add_argument("--gpu-price", type=_price, metavar="PER_HOUR", help="one GPU, per hour")

    for name, func, verb in (
        ("drain", _cmd_drain, "stop routing new requests to"),
        ("undrain", _cmd_undrain, "route requests again to"),
    ):
        p = command(name, f"{verb} a replica (or every replica of --node)", func)
        p.add_argument("replica", nargs="?", metavar="REPLICA")
        p.add_argument("--node", metavar="NODE", help="every replica of this node")
        if name == "drain":
            p.add_argument(
                "--force",
                action="store_true",
                help="drain even the last serving replicas of a model (it will answer 503)",
            )

    p = command("promote", "make a standby replica active", _cmd_promote)
    p.add_argument("replica", metavar="REPLICA")
    p = command("demote", "make an active replica standby", _cmd_demote)
    p.add_argument("replica", metavar="REPLICA")

    p = command("breakers", "open and half-open circuit breakers", _cmd_breakers)
    p.add_argument("--json", action="store_true")
    p = command("reset-breaker", "close a replica's breaker now", _cmd_reset_breaker)
    p.add_argument("replica", metavar="REPLICA")

    for name, func, verb in (
        ("restart", _cmd_restart, "restart a replica through its node (clears a crash loop)"),
        ("sleep", _cmd_sleep, "put a replica's engine to sleep (frees its GPU)"),
    ):
        p = command(name, verb, func)
        p.add_argument("replica", metavar="REPLICA")
        p.add_argument(
            "--force",
            action="store_true",
            help="even the last serving replica of its model (it will answer 503)",
        )
    p = command("wake", "wake (or start) a replica; it serves once L2 passes", _cmd_wake)
    p.add_argument("replica", metavar="REPLICA")
    p = command(
        "slo", "SLOs per model and class: success, availability, p95, MTTR, burn rates", _cmd_slo
    )
    p.add_argument("--json", action="store_true")
    p = command("incidents", "lost replicas: timeline, MTTR, duration", _cmd_incidents)
    p.add_argument("--json", action="store_true")
    p.add_argument("--last", type=_count, metavar="N", help="only the newest N (default 50)")

    p = command(
        "reload",
        "rolling reload of a model's replicas (--status: progress, --abort: stop it)",
        _cmd_reload,
    )
    p.add_argument("model", nargs="?", metavar="MODEL")
    p.add_argument("--status", action="store_true", help="show the rollouts (or MODEL's)")
    p.add_argument("--abort", action="store_true", help="stop MODEL's running rollout")
    p.add_argument(
        "--max-unavailable",
        type=_positive_count,
        default=1,
        metavar="N",
        help="replicas out of service at once (default 1; never below min_active serving)",
    )
    p.add_argument(
        "--surge",
        action="store_true",
        help="first reload and promote a standby, so capacity never dips",
    )
    p.add_argument(
        "--drain-timeout",
        type=_seconds,
        metavar="S",
        help="wait at most S seconds for a draining replica's requests in flight",
    )
    p.add_argument("--json", action="store_true")

    p = command("events", "cluster events (oldest first)", _cmd_events)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--after", type=_count, default=0, metavar="SEQ", help="only events after SEQ")
    p.add_argument("--last", type=_count, metavar="N", help="only the newest N past events")
    p.add_argument("--follow-for", type=float, default=0.0, help=argparse.SUPPRESS)

    p = command("members", "Raft members (add/remove HOST:PORT to change them)", _cmd_members)
    p.add_argument("--json", action="store_true")
    msub = p.add_subparsers(dest="members_command", metavar="{add,remove}")
    m = msub.add_parser("add", help="add a node's raft address", parents=[common])
    m.add_argument("address", type=_address_arg, metavar="HOST:PORT")
    m.set_defaults(func=_cmd_members_add)
    m = msub.add_parser("remove", help="remove a node's raft address", parents=[common])
    m.add_argument("address", type=_address_arg, metavar="HOST:PORT")
    m.set_defaults(func=_cmd_members_remove)

    p = command("leader", "leadership", _cmd_leader_transfer)
    lsub = p.add_subparsers(dest="leader_command", required=True, metavar="{transfer}")
    t = lsub.add_parser("transfer", help="hand leadership to another member", parents=[common])
    t.add_argument("--to", type=_address_arg, metavar="HOST:PORT", help="target raft address")
    t.set_defaults(func=_cmd_leader_transfer)
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command in ("drain", "undrain") and (args.replica is None) == (args.node is None):
        parser.error(f"{args.command}: name a REPLICA or --node NODE (one of them)")
    if args.command == "reload":
        if args.status and args.abort:
            parser.error("reload: --status or --abort, not both")
        if not args.status and args.model is None:
            parser.error("reload: name a MODEL")


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check_args(parser, args)
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    client: Client | None = None
    try:
        settings = resolve_settings(args)
        client = Client(settings)
        return int(args.func(client, args))
    except CtlError as exc:
        print(f"hanodectl: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `hanodectl events | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug here: still one line, never a traceback
        print(f"hanodectl: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CLUSTER
    finally:
        if client is not None:
            client.close()


if __name__ == "__main__":
    sys.exit(main())
