"""Test-side access to the local process helpers (they live in ``hanode.devtools``)."""

from hanode.devtools.procs import (
    ChildProcess,
    NodeProcess,
    SimProcess,
    free_port,
    http_get,
    http_request,
    node_config_toml,
    raw_request,
    start_sim,
    wait_until,
)

__all__ = [
    "ChildProcess",
    "NodeProcess",
    "SimProcess",
    "free_port",
    "http_get",
    "http_request",
    "node_config_toml",
    "raw_request",
    "start_sim",
    "wait_until",
]
