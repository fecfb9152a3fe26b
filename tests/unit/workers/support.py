"""What the worker tests share: the node's first message to a worker."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hanode.http.server import ServerLimits
from hanode.pool.snapshot import PoolSnapshot
from hanode.router.core import RouterSettings
from hanode.workers.messages import Hello


def hello(snapshot: PoolSnapshot, **changes: Any) -> Hello:
    """A hello for worker 0 of 2 on 127.0.0.1, default settings, ``changes`` applied."""
    base = Hello(
        index=0,
        workers=2,
        host="127.0.0.1",
        port=0,
        settings=RouterSettings(),
        limits=ServerLimits(),
        tls_cert_file=None,
        tls_key_file=None,
        snapshot=snapshot,
        routers=1,
    )
    return replace(base, **changes)
