"""Was a request a success? Three answers, because a 200 OK can still be a useless answer.

- technical: the replica answered 2xx;
- functional: the answer is usable: it has generated output and was not cut by an error;
- quality: functional and within the latency SLO (end to end and time to first token).

Pure code: the router feeds it what it saw, metrics count the result.
"""

from __future__ import annotations

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


class StreamInspector:
    """Watches a response body as it is relayed (SSE or one JSON document): did any output
    arrive, and did a stream end with [DONE]?

    Byte scanning instead of JSON parsing keeps the relay cheap; a short tail of the previous
    piece is kept so a key split across two reads is still found.
    """

    __slots__ = ("_tail", "done", "has_output")

    def __init__(self) -> None:
        self.has_output = False
        self.done = False
        self._tail = b""

    def feed(self, data: bytes) -> None:
        window = self._tail + data if self._tail else data
        if not self.has_output:
            for key in _TEXT_KEYS:
                if _has_nonempty_value(window, key):
                    self.has_output = True
                    break
        if not self.done and b"[DONE]" in window:
            self.done = True
        self._tail = window[-24:]
