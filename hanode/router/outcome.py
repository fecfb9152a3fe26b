"""Was a request a success? Three answers, because a 200 OK can still be a useless answer.

- technical: the replica answered 2xx;
- functional: the answer is usable: it has generated output and was not cut by an error;
- quality: functional and within the latency SLO (end to end and time to first token).

Pure code: the router feeds it what it saw, metrics count the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

_TEXT_KEYS = (b'"text"', b'"content"', b'"tool_calls"', b'"reasoning_content"')


@dataclass(frozen=True, slots=True)
class Outcome:
    technical: bool
    functional: bool
    quality: bool


def classify(
    status: int,
    usable: bool,
    complete: bool,
    latency_s: float,
    ttft_s: float | None,
    slo_latency_s: float,
    slo_ttft_s: float,
) -> Outcome:
    technical = 200 <= status < 300
    functional = technical and usable and complete
    quality = functional and latency_s <= slo_latency_s and (ttft_s is None or ttft_s <= slo_ttft_s)
    return Outcome(technical, functional, quality)


def _has_nonempty_value(data: bytes, key: bytes) -> bool:
    """Scan ``data`` for ``key`` followed by a non-empty string or a non-empty list."""
    start = 0
    n = len(data)
    while True:
        i = data.find(key, start)
        if i < 0:
            return False
        j = i + len(key)
        while j < n and data[j] in b" \t:":
            j += 1
        if j + 1 < n:
            c, nxt = data[j], data[j + 1]
            if (c == 0x22 and nxt != 0x22) or (c == 0x5B and nxt != 0x5D):  # "x or [x
                return True
        start = i + 1


_USAGE_KEY = b'"completion_tokens"'
_USAGE_END = _USAGE_KEY[-8:]  # the cheap test before the exact one
_EVENT = b"data:"
_EVENT_OVERLAP = len(_EVENT) - 1  # an event marker split across reads ends in the next piece
_TAIL = 48  # holds '"completion_tokens": 123456' split across two reads


def _last_count(window: bytes) -> int | None:
    """The last complete ``"completion_tokens": N`` in ``window`` (digits cut at its end are
    left for the next read, whose window starts with this one's tail)."""
    i = window.rfind(_USAGE_KEY)
    while i >= 0:
        j = i + len(_USAGE_KEY)
        n = len(window)
        while j < n and window[j] in b" \t:":
            j += 1
        k = j
        while k < n and 0x30 <= window[k] <= 0x39:
            k += 1
        if k > j and k < n:
            return int(window[j:k])
        i = window.rfind(_USAGE_KEY, 0, i)
    return None


class StreamInspector:
    """Watches a response body as it is relayed (SSE or one JSON document): did any output
    arrive (and when), did a stream end with [DONE], and how many tokens came out
    (``usage.completion_tokens`` when the engine says so, else the events counted)?

    Byte scanning instead of JSON parsing keeps the relay cheap; a short tail of the previous
    piece is kept so a key split across two reads is still found. ``clock`` is read once, when
    output first appears: that, not the response head, is a stream's first token (engines send
    the head as soon as they accept the request).
    """

    __slots__ = ("_clock", "_tail", "done", "events", "first_output_at", "has_output", "usage")

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.has_output = False
        self.done = False
        self.events = 0  # SSE data events seen ([DONE] and a usage-only event included)
        self.usage: int | None = None  # usage.completion_tokens, the last one seen
        self.first_output_at: float | None = None
        self._clock = clock
        self._tail = b""

    def feed(self, data: bytes) -> None:
        tail = self._tail
        window = tail + data if tail else data
        if not self.has_output:
            for key in _TEXT_KEYS:
                if _has_nonempty_value(window, key):
                    self.has_output = True
                    if self._clock is not None:
                        self.first_output_at = self._clock()
                    break
        if not self.done and b"[DONE]" in window:
            self.done = True
        # Events ending in this piece (one wholly inside the tail was counted last time).
        start = len(tail) - _EVENT_OVERLAP
        self.events += window.count(_EVENT, start if start > 0 else 0)
        if _USAGE_END in window:
            count = _last_count(window)
            if count is not None:
                self.usage = count
        self._tail = window[-_TAIL:]

    def output_tokens(self, stream: bool) -> int | None:
        """Tokens generated: the engine's usage figure, else (streams) the token events."""
        if self.usage is not None:
            return self.usage
        if not stream:
            return None
        tokens = self.events - (1 if self.done else 0)  # [DONE] is no token
        return tokens if tokens > 0 else None
