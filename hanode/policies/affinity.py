"""Session affinity: which replica serves every request of one session.

A conversation that stays on one replica keeps its KV prefix cache there. Weighted rendezvous
hashing (highest random weight) ranks the routable replicas for a session key by
``w / -ln(u)``, with ``u`` a hash of (key, replica) in (0, 1): every router computes the same
ranking from the same route, without coordination, and a replica that leaves the route moves
only its own sessions, each to its next-ranked replica (they move once, all to one place, not
spread request by request). Weights count in quarter steps, so the small changes that latency
and queue signals make to weights move no session; a replica at half weight holds about half
the sessions it would at full weight.

Pure: no clock, no I/O; the hash is blake2b, stable across processes and hosts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

# Largest session key hashed (longer keys are cut: a key only has to be stable).
MAX_KEY_BYTES = 256

_SCALE = float(1 << 64)


def _unit(key: bytes, name: str) -> float:
    """A uniform draw in (0, 1) that depends only on (key, name)."""
    digest = hashlib.blake2b(key + b"\0" + name.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "little") + 0.5) / _SCALE


def step_weight(weight: float) -> float:
    """``weight`` in quarter steps (at least one step for any positive weight)."""
    if not weight > 0.0:
        return 0.0
    return max(1, round(weight * 4)) / 4.0


def ranking(names: Sequence[str], weights: Sequence[float], key: str) -> list[str]:
    """``names`` best first for session ``key`` (replicas of weight 0 are left out)."""
    raw = key.encode()[:MAX_KEY_BYTES]
    scored: list[tuple[float, str]] = []
    for name, weight in zip(names, weights, strict=True):
        w = step_weight(weight)
        if w > 0.0:
            scored.append((w / -math.log(_unit(raw, name)), name))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [name for _, name in scored]


def session_key(header: bytes | None, user: object) -> str | None:
    """The session of a request: the ``x-session-id`` header, else the body's ``user``."""
    if header:
        text = header.decode("utf-8", "replace").strip()
        if text:
            return "s:" + text
    if isinstance(user, str) and user:
        return "u:" + user
    return None
