"""Which control-API methods a token's role may call.

Two roles: ``read-only`` (status, events, breakers, members, incidents: what dashboards,
``hanodectl status`` and ``hanodectl plan`` read) and ``admin`` (everything, writes included).
A method not listed as a read is a write: a new RPC is closed until someone says otherwise.
"""

from __future__ import annotations

import enum

__all__ = ["READ_METHODS", "Role", "allows", "method_needs"]


class Role(enum.StrEnum):
    READ_ONLY = "read-only"
    ADMIN = "admin"


READ_METHODS = frozenset(
    {
        "GetStatus",
        "ListBreakers",
        "ListMembers",
        "StreamEvents",
        "ListIncidents",
        "ReloadStatus",
        "GetSlo",
    }
)
_CONTROL = "/hanode.v1.Control/"


def method_needs(method: str) -> Role:
    """The role a full gRPC method name (``/hanode.v1.Control/Drain``) needs."""
    if method.startswith(_CONTROL) and method[len(_CONTROL) :] in READ_METHODS:
        return Role.READ_ONLY
    return Role.ADMIN


def allows(role: Role, needed: Role) -> bool:
    return role is Role.ADMIN or needed is Role.READ_ONLY
