"""Request classes and which one a request belongs to (pure).

A class says how urgent a request is (``priority``, 0 first), what availability its callers
were promised, how long it may wait for capacity and how many of its requests may wait, and
whether it may be degraded or moved to a fallback model. A request's class comes from its API
key; a key marked ``class_header`` lets the client pick another configured class with
``x-hanode-class``; else the default class. Keys may be configured as SHA-256 hashes so the
configuration holds no secret: :func:`key_digest` is how a presented token is matched to one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestClass:
    name: str
    priority: int = 1
    availability_target: float = 0.99
    queue_timeout_s: float = 10.0
    max_queue: int = 256
    degrade: bool = True
    fallback: bool = True
    # The share of a model's capacity this class may hold at once: the rest stays free for
    # more urgent classes, so they find a place without waiting for one to end.
    capacity_share: float = 1.0


# The classes every node knows unless [[classes]] says otherwise (a block of the same name
# replaces the default one).
DEFAULT_CLASSES: tuple[RequestClass, ...] = (
    RequestClass("interactive", 0, 0.999, 2.0, 64, degrade=False, fallback=True),
    RequestClass("internal", 1, 0.99, 10.0, 256, degrade=True, fallback=True, capacity_share=0.9),
    RequestClass("batch", 2, 0.95, 120.0, 1024, degrade=True, fallback=False, capacity_share=0.75),
)
DEFAULT_CLASS = "interactive"
# An inline [router] api_keys item given as the key's hash instead of the key.
HASH_PREFIX = "sha256:"


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What one API key may do: its class, whether it may pick another by header, and the
    label its requests are shared fairly under (never the key itself)."""

    label: str
    request_class: str
    class_header: bool = False


def key_digest(token: bytes) -> str:
    """The SHA-256 hex digest a configured hashed key is compared with."""
    return hashlib.sha256(token).hexdigest()


def merge_classes(configured: tuple[RequestClass, ...]) -> dict[str, RequestClass]:
    """Name -> class: the defaults, each replaced by a configured class of its name."""
    out = {c.name: c for c in DEFAULT_CLASSES}
    for c in configured:
        out[c.name] = c
    return out


def resolve_class(
    grant: KeyGrant | None,
    header: str | None,
    classes: Mapping[str, RequestClass],
    default: str = DEFAULT_CLASS,
    *,
    header_allowed: bool = False,
) -> str | None:
    """The class of a request: the header's (if the key allows it, or ``header_allowed``: an
    API without keys), else the key's, else the default. None: the header names a class the
    key may use but that does not exist."""
    if header and (header_allowed or (grant is not None and grant.class_header)):
        return header if header in classes else None
    if grant is not None and grant.request_class in classes:
        return grant.request_class
    return default if default in classes else next(iter(classes))
