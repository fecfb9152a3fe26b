"""Calls one node's control API makes on another's: only the leader can hand leadership over,
so a transfer asked of a follower is passed on to the leader's API, with this node's token
(and, where the API runs TLS, over TLS with this node's certificate as its client
certificate)."""

from __future__ import annotations

from typing import Any

import grpc

from hanode._proto.hanode.v1 import control_pb2, control_pb2_grpc
from hanode.api.control import ControlError, ControlErrorCode


async def forward_transfer(
    api_address: str,
    token: str,
    target: str | None,
    timeout_s: float = 10.0,
    credentials: Any = None,
) -> str | None:
    """Ask the control API at ``api_address`` to transfer leadership; returns the new leader."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    request = control_pb2.TransferLeaderRequest()
    if target is not None:
        request.target = target
    try:
        channel = (
            grpc.aio.insecure_channel(api_address)
            if credentials is None
            else grpc.aio.secure_channel(api_address, credentials)
        )
        async with channel:
            stub = control_pb2_grpc.ControlStub(channel)  # type: ignore[no-untyped-call]
            reply = await stub.TransferLeader(request, timeout=timeout_s, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        raise ControlError(
            ControlErrorCode.UNAVAILABLE,
            f"forwarding to the leader's control API at {api_address} failed: {exc.details()}",
        ) from None
    return reply.new_leader if reply.HasField("new_leader") else None
