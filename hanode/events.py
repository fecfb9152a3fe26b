"""A bounded log of cluster events (health changes, breaker trips, capacity warnings).

Operators ask "what happened?" first; every decision hanode takes is recorded here with its
reason, logged, and kept in memory up to a bound (older events fall off).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog

log = structlog.get_logger("hanode.events")


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    ts: float  # wall clock, for people
    kind: str  # e.g. "health", "breaker", "gpu_memory", "capacity"
    subject: str  # replica or node name
    message: str
    fields: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EventLog:
    def __init__(self, capacity: int = 1000) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._seq = itertools.count(1)
        self._listeners: list[Callable[[Event], None]] = []

    def add(self, kind: str, subject: str, message: str, **fields: Any) -> Event:
        event = Event(next(self._seq), time.time(), kind, subject, message, fields)
        self._events.append(event)
        log.info("event", kind=kind, subject=subject, message=message, **fields)
        for listener in self._listeners:
            listener(event)
        return event

    def recent(self, limit: int = 100, after_seq: int = 0) -> list[Event]:
        items = [e for e in self._events if e.seq > after_seq]
        return items[-limit:]

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)
