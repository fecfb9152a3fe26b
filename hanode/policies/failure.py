"""Failure classes: the vocabulary of what went wrong with one try.

Engines sort their error responses into these; the breaker, the retry policy and the relay
decide per class (retry or not, trip or not, blame the replica or only this router's path).
"""

from __future__ import annotations

import enum


class FailureClass(enum.StrEnum):
    """Why a request failed; decides retry, failover and whether the replica is to blame."""

    CONTEXT_LENGTH = "context_length"  # the request is too long: no replica will take it
    GPU_OOM = "gpu_oom"
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    BUSY = "busy"
    CONNECTION = "connection"  # transport failure; decided by the caller, never by a body
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
