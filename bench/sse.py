"""Reading one streamed completion off the wire: the HTTP/1.1 response (chunked, sized or
closed), the SSE events inside it, and what the client got in the end.

Pure (bytes in, counts out), so the stream relay and failover clients count alike and the
counting is tested directly. A proxy may cut an event across two HTTP chunks or merge many
events into one: events are split on the blank line after de-chunking, never on reads.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_HEAD = 64 * 1024


class StreamTally:
    """One response as its bytes arrive: status, SSE ``data:`` events, ``[DONE]``, the end."""

    __slots__ = (
        "_body_left",
        "_buf",
        "_events",
        "_mode",
        "chunks",
        "close",
        "done",
        "error_events",
        "finished",
        "head",
        "status",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._events = b""
        self._mode = "head"  # head, size, data, data-crlf, trailer, length, until-close, end
        self._body_left = 0
        self.status: int | None = None
        self.head = b""
        self.chunks = 0  # data events other than [DONE]
        self.error_events = 0  # data events carrying an "error" object
        self.done = False  # [DONE] seen
        self.finished = False  # the HTTP response ended properly (not by a cut connection)
        self.close = False  # the server will close the connection after it

    def feed(self, data: bytes) -> None:
        """Take the next bytes read from the socket (raises ValueError on a malformed reply)."""
        if self._mode == "end":
            return
        buf: bytes | None = self._buf + data if self._buf else data
        self._buf = b""
        while buf and self._mode != "end":
            buf = self._step(buf)

    def eof(self) -> None:
        """The connection closed; a close-delimited body ends here, anything else was cut."""
        if self._mode == "until-close":
            self._flush_events(final=True)
            self.finished = True
            self._mode = "end"

    def _step(self, buf: bytes) -> bytes | None:
        """Consume what the current mode can; the rest, or None when more bytes are needed."""
        mode = self._mode
        if mode == "head":
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > MAX_HEAD:
                    raise ValueError("response head too long")
                self._buf = buf
                return None
            self._parse_head(buf[:i])
            return buf[i + 4 :]
        if mode in ("size", "data-crlf", "trailer"):
            i = buf.find(b"\r\n")
            if i < 0:
                self._buf = buf
                return None
            line, rest = buf[:i], buf[i + 2 :]
            if mode == "data-crlf":
                if line:
                    raise ValueError("chunk data longer than its size")
                self._mode = "size"
            elif mode == "size":
                size = int(line.split(b";", 1)[0].strip() or b"x", 16)
                if size == 0:
                    self._mode = "trailer"
                else:
                    self._body_left, self._mode = size, "data"
            elif not line:  # the blank line after the (usually empty) trailers
                self._flush_events(final=True)
                self.finished = True
                self._mode = "end"
            return rest
        if mode in ("data", "length"):
            take = buf[: self._body_left]
            self._body_left -= len(take)
            self._body(take)
            if self._body_left == 0:
                if mode == "data":
                    self._mode = "data-crlf"
                else:
                    self._flush_events(final=True)
                    self.finished = True
                    self._mode = "end"
            return buf[len(take) :]
        # until-close
        self._body(buf)
        return b""

    def _parse_head(self, head: bytes) -> None:
        self.head = head
        first, _, rest = head.partition(b"\r\n")
        parts = first.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x response: {first[:60]!r}")
        self.status = int(parts[1])
        lower = rest.lower()
        headers: dict[bytes, bytes] = {}
        for line in lower.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip()] = value.strip()
        self.close = headers.get(b"connection") == b"close" or parts[0] == b"HTTP/1.0"
        if b"chunked" in headers.get(b"transfer-encoding", b""):
            self._mode = "size"
        elif b"content-length" in headers:
            self._body_left = int(headers[b"content-length"])
            self._mode = "length" if self._body_left else "end"
            self.finished = self._mode == "end"
        elif self.status in (204, 304) or 100 <= self.status < 200:
            self._mode, self.finished = "end", True
        else:
            self._mode, self.close = "until-close", True

    def _body(self, data: bytes) -> None:
        if not data:
            return
        self._events += data
        if b"\n\n" in self._events or b"\r\n\r\n" in self._events:
            self._flush_events(final=False)

    def _flush_events(self, final: bool) -> None:
        text = self._events.replace(b"\r\n", b"\n")
        parts = text.split(b"\n\n")
        self._events = b"" if final else parts.pop()
        for event in parts:
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.done = True
                else:
                    self.chunks += 1
                    if payload.startswith(b'{"error"'):
                        self.error_events += 1


@dataclass(frozen=True, slots=True)
class StreamOutcome:
    kind: str  # "ok", "truncated", "HTTP 502", "ConnectionResetError", ...
    chunks: int

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def classify(tally: StreamTally, want_chunks: int, error: BaseException | None) -> StreamOutcome:
    """What one stream came to: complete (``[DONE]`` after at least ``want_chunks`` events),
    truncated (a 200 that stopped short or ended without ``[DONE]``), or an error: a non-200
    status, or an exception before any answer."""
    if tally.status is None:
        return StreamOutcome(type(error).__name__ if error else "no answer", 0)
    if tally.status != 200:
        return StreamOutcome(f"HTTP {tally.status}", tally.chunks)
    complete = tally.done and tally.chunks >= want_chunks and not tally.error_events
    return StreamOutcome("ok" if complete else "truncated", tally.chunks)
