"""Counting a streamed completion off the wire (bench/sse.py): HTTP framing, SSE events, and
what a stream came to, however the bytes were cut into reads and HTTP chunks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.failover_targets import request_outcome
from bench.sse import StreamTally, classify


def events(n: int, done: bool = True) -> bytes:
    """``n`` chat chunks as the simulator writes them, then ``[DONE]``."""
    out = b""
    for i in range(n):
        doc = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": f" w{i}"}}]}
        out += b"data: " + json.dumps(doc).encode() + b"\n\n"
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunked(body: bytes, sizes: list[int], end: bool = True) -> bytes:
    """``body`` as HTTP/1.1 chunks of the given sizes (cycled), with the last chunk."""
    out, i, k = b"", 0, 0
    while i < len(body):
        n = max(1, sizes[k % len(sizes)])
        part = body[i : i + n]
        out += b"%x\r\n%s\r\n" % (len(part), part)
        i, k = i + n, k + 1
    return out + (b"0\r\n\r\n" if end else b"")


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def feed_in(tally: StreamTally, data: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        tally.feed(data[last:cut])
        last = cut
    tally.feed(data[last:])


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=30),
    sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=12),
)
def test_every_event_is_counted_however_reads_and_chunks_cut_it(
    n: int, sizes: list[int], cuts: list[int]
) -> None:
    wire = HEAD + chunked(events(n), sizes)
    tally = StreamTally()
    feed_in(tally, wire, cuts)
    assert (tally.status, tally.chunks, tally.done, tally.finished) == (200, n, True, True)
    assert classify(tally, n, None).kind == "ok"


def test_a_stream_cut_before_done_is_truncated_not_an_error() -> None:
    tally = StreamTally()
    tally.feed(HEAD + chunked(events(5, done=False), [40], end=False))
    tally.eof()
    assert not tally.finished and not tally.done and tally.chunks == 5
    assert classify(tally, 5, ConnectionResetError()).kind == "truncated"


def test_a_complete_looking_stream_with_too_few_chunks_is_truncated() -> None:
    tally = StreamTally()
    tally.feed(HEAD + chunked(events(3), [1000]))
    assert tally.finished and tally.done
    assert classify(tally, 200, None).kind == "truncated"


def test_an_error_event_makes_the_stream_incomplete() -> None:
    body = events(4, done=False) + b'data: {"error":{"message":"replica died"}}\n\ndata: [DONE]\n\n'
    tally = StreamTally()
    tally.feed(HEAD + chunked(body, [64]))
    assert tally.error_events == 1
    assert classify(tally, 4, None).kind == "truncated"


def test_statuses_and_exceptions() -> None:
    tally = StreamTally()
    tally.feed(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 5\r\n\r\nnope!")
    assert tally.finished and classify(tally, 1, None).kind == "HTTP 502"
    assert classify(StreamTally(), 1, ConnectionRefusedError()).kind == "ConnectionRefusedError"


def test_sized_close_delimited_and_crlf_event_bodies() -> None:
    body = events(2).replace(b"\n", b"\r\n")
    sized = StreamTally()
    sized.feed(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    assert (sized.finished, sized.chunks, sized.done, sized.close) == (True, 2, True, False)
    closed = StreamTally()
    closed.feed(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + body[:-4])
    assert not closed.finished
    closed.eof()
    assert (closed.finished, closed.chunks, closed.done, closed.close) == (True, 2, True, True)


def test_malformed_replies_raise_value_error() -> None:
    with pytest.raises(ValueError):
        StreamTally().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ValueError):
        StreamTally().feed(HEAD + b"zz\r\n")


def test_a_non_streamed_request_is_ok_only_when_whole() -> None:
    whole = StreamTally()
    whole.feed(b'HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{"choices":1}')
    assert request_outcome(whole, None).kind == "ok"
    cut = StreamTally()
    cut.feed(b'HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{"cho')
    cut.eof()
    assert request_outcome(cut, ConnectionResetError()).kind == "cut body"
    assert request_outcome(StreamTally(), TimeoutError()).kind == "TimeoutError"
